"""Command line: parse arguments, call one library function, turn errors into exit codes.

One module per command family (``replication``, ``review``, ``queries``, ``doctor``,
``embedded``); the engine below never imports this package. Exit codes (``errors.EXIT_*``):
0 clean, 1 runtime failure or "needs attention", 2 usage or config error, 3 failed to start.
"""

from __future__ import annotations

import asyncio
import sys

from .. import log
from ..errors import EXIT_RUNTIME, ReplicatorError
from . import doctor, embedded, queries, replication, review
from .output import load_config
from .parser import Parser
from .parser import build as build_parser_from

_log = log.get("cli")
CONFIGURED = {**replication.COMMANDS, **review.COMMANDS}  # commands that take a Config


def build_parser() -> Parser:
    return build_parser_from([replication.add_parsers, review.add_parsers,
                              embedded.add_parsers, queries.add_parsers, doctor.add_parsers])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log.configure()
    try:
        if args.command == "embedded":
            return embedded.run(args)
        if args.command in ("queries", "doctor"):
            runner = queries.run if args.command == "queries" else doctor.run
            return asyncio.run(runner(args))
        cfg = load_config(args)
        log.configure(level=cfg.log_level, fmt=cfg.log_format)
        return asyncio.run(CONFIGURED[args.command](args, cfg)) or 0
    except ReplicatorError as exc:
        _log.error("failed", kind=exc.kind, error=str(exc))
        print(f"replicator: error: {log.scrub(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_RUNTIME
    except Exception as exc:  # noqa: BLE001 - last resort: logged with traceback, exit 1
        _log.exception("unexpected_error", error=f"{type(exc).__name__}: {exc}")
        print(f"replicator: unexpected error: {log.scrub(f'{type(exc).__name__}: {exc}')}",
              file=sys.stderr)
        return EXIT_RUNTIME
