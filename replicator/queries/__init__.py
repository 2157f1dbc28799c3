"""The application's queries: find the SQL in a source tree, translate it from SQLite to Postgres,
flag the constructs whose meaning differs, and replay read-only queries on both databases.

Data is half of a migration; the queries are the other half. Because the replicator holds both
databases in sync, it can run each query on both sides and say which ones return different rows
before production does.

Modules: ``sqltext`` (lexical helpers), ``literals`` and ``extract`` (string literals in source
files), ``catalog`` (the SQLite schema and the Postgres types the copy gives it), ``traps`` (the
catalogue of explanations), ``rules`` and ``funcrules`` (detection and rewrites; date and time
functions come from ``replicator.dialect``, shared with the schema's translation), ``translate``
(one statement), ``scan`` (a source tree), ``compare``/``replay``/``advise`` (both databases) and
``render`` (text, Markdown, JSON). The commands live in ``replicator.cli.queries``.
"""

DRIVERS = ("asyncpg", "psycopg", "node-postgres", "neon")  # placeholder styles: $n, or %s
DEFAULT_SEQ_ROWS = 10_000  # advise on sequential scans of tables larger than this
