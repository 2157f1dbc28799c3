"""``replicator embedded start|stop|dsn``: the embedded local Postgres."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import embedded
from ..dsn import parse_target
from ..errors import EXIT_OK
from .parser import Subparsers


def add_parsers(sub: Subparsers) -> None:
    p = sub.add_parser("embedded", help="manage the embedded local Postgres")
    p.add_argument("action", choices=["start", "stop", "dsn"])
    p.add_argument("--dir", type=Path, help="its home directory")


def run(args: argparse.Namespace) -> int:
    if args.action == "stop":
        print("stopped" if embedded.stop(args.dir) else "not running")
        return EXIT_OK
    emb = embedded.ensure_running(args.dir)
    print(emb.dsn if args.action == "dsn" else parse_target(emb.dsn).masked)
    return EXIT_OK
