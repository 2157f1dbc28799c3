"""The ``run`` daemon: one task group holding the replication loop, the file watcher, background
verification and the metrics/health endpoint (``http``). Signals only set ``stop``; the loop
finishes the batch in flight, commits, and returns."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable

from . import capture, log, metrics, stall, state
from .config import Config
from .dsn import TargetDSN
from .errors import EXIT_OK, ReplicatorError, is_retryable_pg
from .http import Health, serve_http
from .reverse import ReverseApplier
from .service import Replicator
from .session import Progress, ProgressFn, Session
from .snapshot.copier import Interrupted
from .source import open_source
from .stream import CutoverDone
from .tail import Watcher
from .target import backoff
from .verify.background import background_verify

_log = log.get("daemon")


async def run(cfg: Config, target: TargetDSN, stop: asyncio.Event, *,
              progress: ProgressFn | None = None,
              screen: Callable[[Progress], None] | None = None) -> int:
    """Install capture, snapshot, stream until ``stop`` or cutover; returns the exit code.
    ``screen`` receives the daemon's live ``Progress`` (a terminal display reads it)."""
    metrics.initialize()
    metrics.UP.set(1)
    loop_stop = asyncio.Event()  # stops the helpers once the main work returns
    bound: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
    rep = Replicator(cfg, target, mode="run", progress=progress)
    rep.session.stop = stop
    if screen is not None:
        screen(rep.session.progress)
    health = Health(rep.session.progress, cfg.ready_max_lag)
    code = EXIT_OK
    try:
        async with asyncio.TaskGroup() as tg:
            async def listen() -> None:
                """Bind the metrics port once this daemon holds the migration's lock (a second
                daemon is told that, not that the port is taken) and before anything is written
                to the file (a port taken by something else stops the start with nothing
                installed)."""
                if cfg.metrics_addr:
                    tg.create_task(serve_http(cfg.metrics_addr, health, loop_stop, bound))
                    await bound

            try:
                code = await _main(rep, stop, tg, loop_stop, listen)
            finally:
                loop_stop.set()
    except BaseExceptionGroup as group:
        error = _first(group)
        _what_stays(rep, error)
        raise error from None
    finally:
        metrics.UP.set(0)
        await rep.close()
    return code


def _what_stays(rep: Replicator, error: BaseException) -> None:
    """A run that fails leaves capture in the file on purpose (the next run resumes from the log,
    which nothing else can rebuild): say so, with what grows meanwhile and how to give up."""
    live = rep.session.live_file
    if not isinstance(error, ReplicatorError) or live is None:
        return
    try:
        if not capture.installed(live.conn):
            return
        entries = capture.position(live.conn, 0).rows
    except Exception:  # noqa: BLE001 - the file itself may be what failed
        return
    source = rep.cfg.source
    _log.warning(
        "capture_left_installed", source=str(source), log_entries=entries,
        detail=f"capture stays installed in {source} so that the next `replicator run` resumes "
        "where this one stopped; until then the application's writes keep adding to the change "
        f"log ({entries} entries now) and nothing applies them. To give up instead: "
        f"`replicator uninstall --source {source}`")


def _first(group: BaseExceptionGroup) -> BaseException:
    """The error to report from a task group: ours first, else the first one."""
    flat: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            stack = list(exc.exceptions) + stack
        else:
            flat.append(exc)
    return next((e for e in flat if isinstance(e, ReplicatorError)), flat[0])


async def _main(rep: Replicator, stop: asyncio.Event, tg: asyncio.TaskGroup,
                loop_stop: asyncio.Event, listen: Callable[[], Awaitable[None]]) -> int:
    session, cfg = rep.session, rep.cfg
    await rep.open()
    await rep.lock()
    await listen()
    st = await rep.prepare()
    session.progress.state = st.state
    _log.info("replicator_started", source=str(cfg.source), target=session.target.masked,
              state=st.state, cursor=st.cursor)
    if not st.info.get("snapshot_done"):
        session.progress.state = "snapshot"
    snapshot_gauges = tg.create_task(_snapshot_gauges(session))
    try:
        await _snapshot_with_retries(rep, stop)
    except Interrupted as exc:
        _log.info("snapshot_interrupted", table=str(exc), detail="resumes from the last chunk")
        return EXIT_OK
    finally:
        snapshot_gauges.cancel()
    if stop.is_set():
        return EXIT_OK
    session.progress.state = "streaming"
    watcher = Watcher(cfg.source, force_polling=cfg.force_polling)
    tg.create_task(watcher.run(loop_stop))
    if cfg.verify_interval > 0:
        tg.create_task(background_verify(cfg, session.target, session.progress, loop_stop))
    while not stop.is_set():
        try:
            await rep.stream.run(stop, watcher)
        except CutoverDone:
            after = await _fallback_window(rep, stop)
            if after == "streaming":
                continue  # rolled back: SQLite is the source of truth again, stream forward
            if after == "fallback":  # stopped by a signal; the window stays open
                _log.info("replicator_stopped", state="fallback",
                          detail="the fallback window stays open; `replicator run` resumes it")
                return EXIT_OK
            session.progress.set_state("done")
            _log.info("cutover_done", detail="the migration was cut over; the daemon exits")
            return EXIT_OK
    _log.info("replicator_stopped", cursor=session.cursor)
    return EXIT_OK


async def _fallback_window(rep: Replicator, stop: asyncio.Event) -> str:
    """After a cutover that opened the fallback window: apply Postgres's changes back to SQLite
    until `rollback` (returns "streaming"), `finish` ("done") or ``stop`` ("fallback")."""
    st = await state.load(rep.session.conn)
    if st is None or st.state != "fallback":
        return "done"
    return await ReverseApplier(rep.session).run(stop)


async def _snapshot_with_retries(rep: Replicator, stop: asyncio.Event, attempts: int = 12) -> None:
    """The snapshot resumes from its last committed chunk, so a dropped connection (Neon
    suspending or restarting the compute) only costs a reconnect."""
    for attempt in range(1, attempts + 1):
        try:
            await rep.snapshot.run()
            return
        except Exception as exc:
            if not is_retryable_pg(exc) or attempt == attempts or stop.is_set():
                raise
            metrics.ERRORS.labels("target").inc()
            delay = backoff(attempt)
            _log.warning("snapshot_retry", attempt=attempt, delay=round(delay, 2),
                         error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(delay)
            with contextlib.suppress(Exception):
                await rep.reconnect()
                metrics.TARGET_RECONNECTS.inc()


async def _snapshot_gauges(session: Session) -> None:
    """While the snapshot runs, the changes it will have to catch up on keep being measured."""

    def read() -> capture.LogPosition:
        conn = open_source(session.cfg.source, readonly=True)
        try:
            return capture.position(conn, 0)
        finally:
            conn.close()

    while session.progress.state in ("new", "snapshot"):
        with contextlib.suppress(Exception):
            polled = await asyncio.to_thread(read)
            session.progress.set_position(polled.rows, polled.lag)
        await asyncio.sleep(2)


def install_signal_handlers(stop: asyncio.Event, force_after: float) -> None:
    """First SIGTERM/SIGINT: drain and stop. Second: exit at once."""
    loop = asyncio.get_running_loop()

    def handler(signame: str) -> None:
        if stop.is_set():
            _log.warning("forced_exit", signal=signame)
            os._exit(1)
        _log.info("stopping", signal=signame, detail="finishing the batch in flight")
        stop.set()
        loop.call_later(force_after, _force, signame)

    def _force(signame: str) -> None:
        _log.error("drain_timeout", signal=signame, seconds=force_after)
        os._exit(1)

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, handler, sig.name)
    with contextlib.suppress(NotImplementedError, AttributeError):
        loop.add_signal_handler(signal.SIGUSR1, stall.dump_tasks)

