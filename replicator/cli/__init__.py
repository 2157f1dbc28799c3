"""Command line: parse arguments, call one library function, turn errors into exit codes.

One module per command family (``replication``, ``review``, ``queries``, ``doctor``,
``embedded``); the engine below never imports this package. Exit codes (``errors.EXIT_*``):
0 clean, 1 runtime failure or "needs attention", 2 usage or config error, 3 failed to start.
"""

from __future__ import annotations

import asyncio
import os
import sys

from .. import log
from ..errors import EXIT_OK, EXIT_RUNTIME, ReplicatorError
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
        _report("error", str(exc), kind=exc.kind)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_RUNTIME
    except BrokenPipeError:
        # The reader went away (`plan --json | head`): what it read was all it wanted. Quietly,
        # and with stdout pointed elsewhere so the interpreter's last flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - last resort: logged with traceback, exit 1
        if log.is_json():
            _log.exception("unexpected_error", error=f"{type(exc).__name__}: {exc}")
        else:
            _report("unexpected error", f"{type(exc).__name__}: {exc}")
        return EXIT_RUNTIME


def _report(what: str, message: str, **fields: str) -> None:
    """The final error, once: a JSON log line for machines, or one line for a person."""
    if log.is_json():
        _log.error("failed", error=message, **fields)
    else:
        print(f"replicator: {what}: {log.scrub(message)}", file=sys.stderr)
