"""``replicator embedded start|stop|dsn|drop``: the embedded local Postgres, with one database
per source file (``--source``), so rehearsals can be repeated and reset one by one."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import embedded
from ..dsn import parse_target
from ..errors import EXIT_OK, ConfigError
from .parser import Subparsers


def add_parsers(sub: Subparsers) -> None:
    p = sub.add_parser("embedded", help="manage the embedded local Postgres (start, stop, print "
                       "a DSN, or drop one source file's database to rehearse again)")
    p.add_argument("action", choices=["start", "stop", "dsn", "drop"])
    p.add_argument("--dir", type=Path, help="its home directory")
    p.add_argument("--source", type=Path,
                   help="the SQLite file whose database to use (dsn) or drop (drop)")


def run(args: argparse.Namespace) -> int:
    if args.action == "stop":
        print("stopped" if embedded.stop(args.dir) else "not running")
        return EXIT_OK
    if args.action == "drop":
        if args.source is None:
            raise ConfigError("--source: which SQLite file's rehearsal to drop")
        name = embedded.database_name(args.source)
        dropped = embedded.drop_database(args.source, args.dir)
        print(f"dropped database {name}" if dropped else f"no database {name} to drop")
        return EXIT_OK
    emb = embedded.ensure_running(args.dir, source=args.source)
    print(emb.dsn if args.action == "dsn" else parse_target(emb.dsn).masked)
    return EXIT_OK
