"""The replication commands: run, copy, status, cutover, rollback, finish, uninstall."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from .. import daemon, service
from .. import rollback as window
from ..config import Config
from ..cutover import cutover as do_cutover
from ..errors import EXIT_OK, EXIT_RUNTIME, EXIT_STARTUP, NothingReplicated
from ..status import gather as gather_status
from ..status import render as render_status
from .output import config_target, emit, progress
from .parser import Subparsers, common


def add_parsers(sub: Subparsers) -> None:
    p = common(sub, "run", "the daemon: install capture, snapshot, stream until cutover or a signal")
    p.add_argument("--metrics-addr", help="HOST:PORT for /metrics, /healthz, /readyz "
                   "(default 127.0.0.1:9753; 'off' to disable)")
    common(sub, "copy", "one-shot copy into Postgres, no capture; exits when done", json_=True)
    p = common(sub, "status", "where replication stands", json_=True)
    p.add_argument("--check", action="store_true",
                   help="exit 0 when streaming without error and lag under the bound, else 1")
    p = common(sub, "cutover", "fence SQLite, drain, verify, finish the schema, mark done",
               json_=True)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds allowed for the drain")
    p.add_argument("--max-lag", type=float, default=30.0,
                   help="refuse to start while replication lags more than this (seconds)")
    p.add_argument("--accept-quarantine", action="store_true",
                   help="cut over even though rows sit in quarantine (they stay out of Postgres; "
                   "the report lists each with its raw values)")
    p.add_argument("--fallback", action=argparse.BooleanOptionalAction, default=None,
                   help="open the fallback window: Postgres changes keep flowing back into the "
                   "SQLite file until `finish`, so `rollback` loses nothing (default: the "
                   "config's cutover.fallback, else off)")
    p = common(sub, "rollback", "fallback window: fence Postgres, drain its changes back into "
               "SQLite, verify, lift the SQLite fence; replication then streams forward again",
               json_=True)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds allowed for each drain")
    p = common(sub, "finish", "end the fallback window: reverse capture removed, the SQLite file "
               "archived with the migration report, the _replicator schema dropped", json_=True)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds allowed for the drain")
    p = common(sub, "uninstall", "remove every replicator object from the SQLite file")
    p.add_argument("--target-schema", action="store_true",
                   help="also drop the target's _replicator bookkeeping schema")


async def run(args: argparse.Namespace, cfg: Config) -> int:
    target = config_target(cfg, create=True)
    stop = asyncio.Event()
    daemon.install_signal_handlers(stop, cfg.drain_timeout)
    with progress() as bars:
        return await daemon.run(cfg, target, stop, progress=bars,
                                screen=bars.watch if bars is not None else None)


async def copy(args: argparse.Namespace, cfg: Config) -> int:
    target = config_target(cfg, create=True)
    with progress() as bars:
        data = await service.copy_once(cfg, target, progress=bars)
    quarantined = data["quarantined"]
    human = (
        f"copied {data['rows']} rows in {len(data['tables'])} tables to {target.masked} "
        f"in {data['seconds']}s"
        + (f"; {sum(quarantined.values())} rows quarantined (see _replicator.quarantine)"
           if quarantined else "")
    )
    emit(data, args.json, human)
    return EXIT_OK


async def status(args: argparse.Namespace, cfg: Config) -> int:
    try:
        target = config_target(cfg)
    except NothingReplicated as exc:  # the embedded default, before any run: nothing to read
        emit({"state": "new", "ready": False, "detail": str(exc)}, args.json,
             f"state:      new  ({exc})")
        return EXIT_RUNTIME if args.check else EXIT_OK
    data = await gather_status(cfg, target)
    emit(data, args.json, render_status(data))
    if "target_error" in data:
        return EXIT_STARTUP  # the target could not be reached: the figures above are partial
    if args.check:
        return EXIT_OK if data.get("ready") else EXIT_RUNTIME
    return EXIT_OK


async def cutover(args: argparse.Namespace, cfg: Config) -> int:
    target = config_target(cfg)
    summary = await do_cutover(cfg, target, timeout=args.timeout, max_lag=args.max_lag,
                               accept_quarantine=args.accept_quarantine,
                               with_fallback=args.fallback)
    human = (
        f"cutover done: {summary['rows']} rows in {len(summary['tables'])} tables; "
        f"write freeze {summary['freeze_window_ms']} ms"
    )
    if summary["fallback_window"]:
        human += ("\nfallback window open: the application's writes on Postgres flow back into "
                  f"{cfg.source} while `replicator run` runs; `replicator rollback` returns to "
                  "SQLite with nothing lost, `replicator finish` ends the window")
    left = summary["for_a_human"]
    if left:
        human += f"\n\n{len(left)} thing(s) left for a human:"
        for item in left:
            human += f"\n  - {item['object']}: {item['status']}"
            if item.get("detail"):
                human += f" ({' '.join(str(item['detail']).split())[:200]})"
            if item.get("fix"):
                human += f"\n      fix: {item['fix']}"
    emit(summary, args.json, human)
    return EXIT_OK


async def rollback(args: argparse.Namespace, cfg: Config) -> int:
    result = await window.rollback(cfg, config_target(cfg), timeout=args.timeout)
    back = result["moved_back"]
    human = (f"rolled back: SQLite ({cfg.source}) is the source of truth again; write freeze "
             f"{result['freeze_window_ms']} ms\n"
             f"  rows moved back during the window: {result['rows_moved_back_in_window']} "
             f"(in the final drain: {back['after_fence']['entries']} changes)\n"
             f"  verified equal: {result['verification']['rows']} rows value by value\n"
             + (f"  {sum(result['quarantine'].values())} row(s) in quarantine: values SQLite "
                "could not hold exactly went back by the stated rule (`replicator status`, "
                "`replicator report` list them)\n" if result["quarantine"] else "") +
             "  Postgres is fenced; point the application at the SQLite file. A running daemon "
             "streams its writes forward again")
    emit(result, args.json, human)
    return EXIT_OK


async def finish(args: argparse.Namespace, cfg: Config) -> int:
    result = await window.finish(cfg, config_target(cfg), timeout=args.timeout)
    human = (f"migration finished: reverse capture removed; {cfg.source} archived at "
             f"{result['archive']} (sha256 {result['sha256'][:16]}…); report: {result['report']}")
    emit(result, args.json, human)
    return EXIT_RUNTIME if result["left_in_postgres"] else EXIT_OK


async def uninstall(args: argparse.Namespace, cfg: Config) -> int:
    target = None
    if args.target_schema:
        with contextlib.suppress(NothingReplicated):  # no database: no schema to drop there
            target = config_target(cfg)
    result = await service.uninstall(cfg, target)
    print(f"removed {result['triggers']} triggers and {result['tables']} tables from {cfg.source}")
    if target is not None:
        print(f"dropped schema {result['schema']} in {target.masked}")
    return EXIT_OK


COMMANDS = {"run": run, "copy": copy, "status": status, "cutover": cutover,
            "rollback": rollback, "finish": finish, "uninstall": uninstall}
