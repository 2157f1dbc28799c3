"""Command line: parse arguments, call one library function, turn errors into exit codes.

Exit codes: 0 clean, 1 runtime failure, 2 usage or config error, 3 failed to start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import __version__, config, embedded, log
from .dsn import TargetDSN, parse_target
from .errors import EXIT_RUNTIME, EXIT_USAGE, ReplicatorError
from .queries import cli as queries_cli

_log = log.get("cli")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's default exit code is 2 already
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="replicator", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"replicator {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, help_: str, *, target: bool = True, json_: bool = False):
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--source", type=Path, help="the SQLite database file")
        if target:
            p.add_argument("--target", help="Postgres DSN (default: $REPLICATOR_TARGET_URL, "
                           "$DATABASE_URL, else an embedded local Postgres)")
        p.add_argument("--config", type=Path, help="TOML config file (flags override it)")
        p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
        p.add_argument("--log-format", choices=["auto", "json", "console"])
        if json_:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    p = command("run", "the daemon: install capture, snapshot, stream until cutover or a signal")
    p.add_argument("--metrics-addr", help="HOST:PORT for /metrics, /healthz, /readyz "
                   "(default 127.0.0.1:9753; 'off' to disable)")
    command("copy", "one-shot copy into Postgres, no capture; exits when done", json_=True)
    p = command("status", "where replication stands", json_=True)
    p.add_argument("--check", action="store_true",
                   help="exit 0 when streaming without error and lag under the bound, else 1")
    p = command("verify", "compare every table value by value; exit 0 only when all match",
                json_=True)
    p.add_argument("--tables", help="comma-separated SQLite table names to verify")
    p.add_argument("--sample", type=float, help="verify only this fraction of rows (0 < f <= 1)")
    p = command("cutover", "fence SQLite, drain, verify, finish the schema, mark done", json_=True)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds allowed for the drain")
    p.add_argument("--max-lag", type=float, default=30.0,
                   help="refuse to start while replication lags more than this (seconds)")
    p = command("uninstall", "remove every replicator object from the SQLite file")
    p.add_argument("--target-schema", action="store_true",
                   help="also drop the target's _replicator bookkeeping schema")
    p = command("plan", "the migration plan: type mapping with reasons, what cannot move exactly",
                target=False, json_=True)
    p.add_argument("--emit-sql", type=Path, metavar="DIR", help="write the target DDL as files")
    p = command("report", "the migration report: what moved, mapping, quarantine, timings, rollback")
    p.add_argument("--format", choices=["md", "html", "json"], default="md")
    p.add_argument("--output", type=Path, help="write to this file instead of stdout")
    p = sub.add_parser("embedded", help="manage the embedded local Postgres")
    p.add_argument("action", choices=["start", "stop", "dsn"])
    p.add_argument("--dir", type=Path, help="its home directory")
    queries_cli.add_parsers(sub)
    return parser


def load_config(args: argparse.Namespace) -> config.Config:
    overrides: dict[str, Any] = {
        "source": str(args.source) if args.source else None,
        "target_url": getattr(args, "target", None),
        "metrics_addr": getattr(args, "metrics_addr", None),
        "log_level": args.log_level,
        "log_format": args.log_format,
    }
    return config.build(args.config, overrides)


def resolve_target(cfg: config.Config) -> TargetDSN:
    """The target from flags/config/env, else the embedded default (started if needed)."""
    if cfg.target_url:
        target = parse_target(cfg.target_url)
    else:
        emb = embedded.ensure_running(cfg.embedded_dir)
        log.add_secret(emb.owner_password)
        target = parse_target(emb.dsn)
        print(
            f"embedded Postgres: {target.masked} (credentials in {emb.home / 'credentials.json'})",
            file=sys.stderr,
        )
    log.add_secret(target.password)
    if cfg.pooled is not None:  # target.pooled in the config overrides the host-name guess
        target = replace(target, pooled=cfg.pooled)
    if target.pooled:
        _log.warning(
            "pooled_endpoint", host=target.host,
            detail="a transaction pooler (a -pooler host, or target.pooled = true): the direct "
            "endpoint is better for migrations. Continuing with statement_cache_size=0",
        )
    return target


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log.configure()
    try:
        if args.command == "embedded":
            return _embedded(args)
        if args.command in queries_cli.COMMANDS:
            return asyncio.run(queries_cli.dispatch(args))
        cfg = load_config(args)
        log.configure(level=cfg.log_level, fmt=cfg.log_format)
        return asyncio.run(dispatch(args, cfg)) or 0
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


async def dispatch(args: argparse.Namespace, cfg: config.Config) -> int:
    from . import commands

    return await getattr(commands, args.command)(args, cfg)


def _embedded(args: argparse.Namespace) -> int:
    if args.action == "stop":
        print("stopped" if embedded.stop(args.dir) else "not running")
        return 0
    emb = embedded.ensure_running(args.dir)
    if args.action == "dsn":
        print(emb.dsn)
    else:
        print(parse_target(emb.dsn).masked)
    return 0


def emit(data: Any, as_json: bool, human: str) -> None:
    if as_json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print(human)


if __name__ == "__main__":
    sys.exit(main())
