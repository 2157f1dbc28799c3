"""One function per CLI command; each calls into the library and renders the result."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import sys
from typing import Any

from . import capture, daemon, log, state
from .cli import emit, resolve_target
from .config import Config
from .errors import EXIT_OK, EXIT_RUNTIME, StartupError
from .service import Replicator
from .source_write import LiveFile

_log = log.get("commands")


def _progress():
    if not sys.stderr.isatty():
        return contextlib.nullcontext(None)
    from .progress import TableProgress

    return TableProgress()


async def run(args: argparse.Namespace, cfg: Config) -> int:
    target = resolve_target(cfg)
    stop = asyncio.Event()
    daemon.install_signal_handlers(stop, cfg.drain_timeout)
    with _progress() as progress:
        return await daemon.run(cfg, target, stop, progress=progress)


async def copy(args: argparse.Namespace, cfg: Config) -> int:
    target = resolve_target(cfg)
    rep = Replicator(cfg, target, mode="copy")
    try:
        with _progress() as progress:
            rep.progress = progress
            await rep.open(readonly_source=True)
            await rep.lock()
            await rep.prepare()
            await rep.snapshot_phase()
        assert rep.pg is not None
        tables = await state.tables(rep.pg)
        st = await state.load(rep.pg)
        quarantined = await state.quarantine_count(rep.pg)
    finally:
        await rep.close()
    assert st is not None
    data = {
        "state": st.state,
        "target": target.masked,
        "seconds": st.info.get("snapshot_seconds"),
        "tables": {n: {"rows": t.rows_copied, "pg_name": t.pg_name} for n, t in tables.items()},
        "rows": sum(t.rows_copied for t in tables.values()),
        "quarantined": quarantined,
    }
    human = (
        f"copied {data['rows']} rows in {len(tables)} tables to {target.masked} "
        f"in {data['seconds']}s"
        + (f"; {sum(quarantined.values())} rows quarantined (see _replicator.quarantine)"
           if quarantined else "")
    )
    emit(data, args.json, human)
    return EXIT_OK


async def status(args: argparse.Namespace, cfg: Config) -> int:
    from .status import gather, render

    target = resolve_target(cfg)
    data = await gather(cfg, target)
    emit(data, args.json, render(data))
    if args.check:
        return EXIT_OK if data.get("ready") else EXIT_RUNTIME
    return EXIT_OK


async def cutover(args: argparse.Namespace, cfg: Config) -> int:
    from .cutover import cutover as do_cutover

    target = resolve_target(cfg)
    summary = await do_cutover(cfg, target, timeout=args.timeout, max_lag=args.max_lag)
    human = (
        f"cutover done: {summary['rows']} rows in {len(summary['tables'])} tables; "
        f"write freeze {summary['freeze_window_ms']} ms"
    )
    emit(summary, args.json, human)
    return EXIT_OK


async def uninstall(args: argparse.Namespace, cfg: Config) -> int:
    _refuse_if_daemon_running(cfg)
    live = LiveFile.open(cfg.source, busy_timeout_ms=cfg.busy_timeout_ms,
                         quiet_wait=cfg.quiet_write_timeout)
    try:
        result = await asyncio.to_thread(capture.uninstall, live)
    finally:
        live.conn.close()
    print(f"removed {result['triggers']} triggers and {result['tables']} tables from {cfg.source}")
    if args.target_schema:
        from .target import connect

        target = resolve_target(cfg)
        pg = await connect(target, timeout=cfg.connect_timeout, tls_verify=cfg.tls_verify)
        try:
            await pg.execute(f"DROP SCHEMA IF EXISTS {state.SCHEMA} CASCADE")
        finally:
            await pg.close()
        print(f"dropped schema {state.SCHEMA} in {target.masked}")
    return EXIT_OK


def _refuse_if_daemon_running(cfg: Config) -> None:
    lock = cfg.state_path / "daemon.lock"
    if not lock.exists():
        return
    with open(lock) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StartupError(
                f"a replicator daemon (pid {fh.read().strip() or '?'}) is running for "
                f"{cfg.source}; stop it first"
            ) from None


async def plan(args: argparse.Namespace, cfg: Config) -> int:
    from .plan import build, render

    report = await asyncio.to_thread(build, cfg)
    if args.emit_sql:
        from .plan import emit_sql

        files = emit_sql(report, cfg, args.emit_sql)
        print(f"wrote {len(files)} files to {args.emit_sql}", file=sys.stderr)
    emit(report, args.json, render(report))
    return EXIT_OK if report["exact"] else EXIT_RUNTIME


async def verify(args: argparse.Namespace, cfg: Config) -> int:
    from .verify import render
    from .verify import verify as do_verify

    target = resolve_target(cfg)
    tables = [t for t in (args.tables or "").split(",") if t] or None
    report: dict[str, Any] = await do_verify(cfg, target, tables=tables, sample=args.sample)
    emit(report, args.json, render(report))
    return EXIT_OK if report["ok"] else EXIT_RUNTIME


async def report(args: argparse.Namespace, cfg: Config) -> int:
    from .report import gather, render

    target = resolve_target(cfg)
    text = render(await gather(cfg, target), args.format)
    if args.output:
        args.output.write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        print(text)
    return EXIT_OK
