"""SQLite SQL in Postgres terms, one table of functions for every translation: the schema's own
expressions (DEFAULTs, CHECKs, generated columns, index expressions, views, triggers:
``expressions``) and the application's queries (``replicator.queries``) both take SQLite's date
and time functions from ``timefuncs`` and build nodes with ``build``."""
