"""The DuckDB anchor of the snapshot benchmark: DuckDB's bare copy of a SQLite file into Postgres.

    python bench/duckdb_copy.py SOURCE.db POSTGRES_DSN

Attaches the SQLite file (sqlite extension, read-only) and the Postgres database (postgres
extension), then runs ``CREATE TABLE pg.public.<t> AS SELECT * FROM sq.<t>`` for every table, one
after the other, with DuckDB's defaults: no keys, no indexes, no constraints, the column types
DuckDB picks from the declared types. Prints one JSON object: the seconds per table, or the error
that stopped it and at which stage (``import``, ``extensions``, ``attach``, ``copy``).

No extension is downloaded: they are loaded from the ``.duckdb_extension`` files shipped by the
PyPI packages ``duckdb-ext-sqlite`` and ``duckdb-ext-postgres`` (``extension_directory`` points at
them; autoinstall is off). DuckDB still checks their signatures (unsigned extensions are refused).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path


def extension_directory() -> Path | None:
    """Where the duckdb-ext-* wheels put the extension files (a namespace package, no code)."""
    spec = importlib.util.find_spec("duckdb_ext")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        path = Path(loc) / "extensions"
        if path.is_dir():
            return path
    return None


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """A SQL string literal (ATTACH takes no prepared-statement parameters)."""
    return "'" + text.replace("'", "''") + "'"


def main(source: str, dsn: str) -> dict:
    t_start = time.monotonic()
    stage = "import"
    out: dict = {"tables": {}}
    try:
        import duckdb

        out["duckdb"] = duckdb.__version__
        stage = "extensions"
        ext_dir = extension_directory()
        if ext_dir is None:
            raise RuntimeError("no extension files: pip install duckdb-ext-sqlite duckdb-ext-postgres "
                               "(matching the duckdb version)")
        con = duckdb.connect(config={"extension_directory": str(ext_dir),
                                     "autoinstall_known_extensions": False,
                                     "autoload_known_extensions": False})
        con.execute("LOAD sqlite")
        con.execute("LOAD postgres")
        stage = "attach"
        con.execute(f"ATTACH {literal(source)} AS sq (TYPE sqlite, READ_ONLY)")
        con.execute(f"ATTACH {literal(dsn)} AS pg (TYPE postgres)")
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'sq' "
            "AND table_name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY table_name").fetchall()]
        out["setup_s"] = round(time.monotonic() - t_start, 3)
        stage = "copy"
        for t in tables:
            out["table"] = t
            t0 = time.monotonic()
            con.execute(f"CREATE TABLE pg.public.{quote(t)} AS SELECT * FROM sq.{quote(t)}")
            out["tables"][t] = {"seconds": round(time.monotonic() - t0, 3)}
        out.pop("table", None)
        con.close()
    except Exception as exc:  # reported, not raised: the bench records what stopped DuckDB
        out.update(error=f"{type(exc).__name__}: {exc}", stage=stage)
    out["seconds"] = round(time.monotonic() - t_start, 3)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    result = main(sys.argv[1], sys.argv[2])
    print(json.dumps(result))
    sys.exit(1 if "error" in result else 0)
