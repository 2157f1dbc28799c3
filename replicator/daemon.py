"""The ``run`` daemon: one task group holding the replication loop, the file watcher and the
metrics/health endpoint. Signals only set ``stop``; the loop finishes the batch in flight,
commits, and returns."""

from __future__ import annotations

import asyncio
import contextlib
import time

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import log, metrics
from .config import Config, parse_addr
from .dsn import TargetDSN
from .errors import EXIT_OK, ReplicatorError, is_retryable_pg
from .service import Done, Replicator
from .snapshot import Interrupted
from .tail import Watcher
from .target import backoff

_log = log.get("daemon")


class Health:
    """What /healthz and /readyz report."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.state = "new"
        self.started = time.time()

    def ready(self) -> tuple[bool, str]:
        lag = metrics.LAG_SECONDS._value.get()
        if self.state != "streaming":
            return False, f"state {self.state}"
        if metrics.STATE.labels("error")._value.get() == 1:
            return False, "error"
        if lag > self.cfg.ready_max_lag:
            return False, f"lag {lag:.1f}s > {self.cfg.ready_max_lag}s"
        return True, "ok"


async def serve_http(addr: str, health: Health, stop: asyncio.Event, bound: asyncio.Future) -> None:
    """A minimal HTTP/1.0 server: GET /metrics, /healthz, /readyz."""
    host, port = parse_addr(addr)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            path = line.split()[1].decode() if len(line.split()) > 1 else "/"
            status, ctype, body = _route(path.split("?")[0], health)
            writer.write(
                f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode() + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    bound.set_result(server.sockets[0].getsockname()[:2])
    _log.info("metrics_listening", addr=f"{host}:{server.sockets[0].getsockname()[1]}")
    async with server:
        await stop.wait()


def _route(path: str, health: Health) -> tuple[str, str, bytes]:
    if path == "/metrics":
        return "200 OK", CONTENT_TYPE_LATEST, generate_latest(metrics.REGISTRY)
    if path == "/healthz":
        return "200 OK", "text/plain", b"ok\n"
    if path == "/readyz":
        ok, why = health.ready()
        return ("200 OK" if ok else "503 Service Unavailable"), "text/plain", (why + "\n").encode()
    return "404 Not Found", "text/plain", b"not found\n"


async def run(cfg: Config, target: TargetDSN, stop: asyncio.Event, *, progress=None) -> int:
    """Install capture, snapshot, stream until ``stop`` or cutover; returns the exit code."""
    health = Health(cfg)
    metrics.initialize()
    metrics.UP.set(1)
    loop_stop = asyncio.Event()  # stops the helpers once the main work returns
    bound: asyncio.Future = asyncio.get_running_loop().create_future()
    rep = Replicator(cfg, target, mode="run", progress=progress)
    rep.stop = stop
    code = EXIT_OK
    try:
        async with asyncio.TaskGroup() as tg:
            if cfg.metrics_addr:
                tg.create_task(serve_http(cfg.metrics_addr, health, loop_stop, bound))
            try:
                code = await _main(rep, cfg, health, stop, tg, loop_stop)
            finally:
                loop_stop.set()
    except BaseExceptionGroup as group:
        raise _first(group) from None
    finally:
        metrics.UP.set(0)
        await rep.close()
    return code


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


async def _main(
    rep: Replicator, cfg: Config, health: Health, stop: asyncio.Event, tg: asyncio.TaskGroup,
    loop_stop: asyncio.Event,
) -> int:
    await rep.open()
    await rep.lock()
    st = await rep.prepare()
    health.state = st.state
    _log.info("replicator_started", source=str(cfg.source), target=rep.target.masked,
              state=st.state, cursor=st.cursor)
    snapshot_gauges = tg.create_task(_snapshot_gauges(cfg, health))
    if not st.info.get("snapshot_done"):
        health.state = "snapshot"
    try:
        await _snapshot_with_retries(rep, stop)
    except Interrupted as exc:
        _log.info("snapshot_interrupted", table=str(exc), detail="resumes from the last chunk")
        return EXIT_OK
    finally:
        snapshot_gauges.cancel()
    if stop.is_set():
        return EXIT_OK
    health.state = "streaming"
    watcher = Watcher(cfg.source, force_polling=cfg.force_polling)
    tg.create_task(watcher.run(loop_stop))
    if cfg.verify_interval > 0:
        tg.create_task(background_verify(cfg, rep.target, loop_stop))
    try:
        await rep.stream(stop, watcher)
    except Done:
        health.state = "done"
        metrics.set_state("done")
        _log.info("cutover_done", detail="the migration was cut over; the daemon exits")
        return EXIT_OK
    _log.info("replicator_stopped", cursor=rep.cursor)
    return EXIT_OK


async def _snapshot_with_retries(rep: Replicator, stop: asyncio.Event, attempts: int = 12) -> None:
    """The snapshot resumes from its last committed chunk, so a dropped connection (Neon
    suspending or restarting the compute) only costs a reconnect."""
    for attempt in range(1, attempts + 1):
        try:
            await rep.snapshot_phase()
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


async def _snapshot_gauges(cfg: Config, health: Health) -> None:
    """While the snapshot runs, the changes it will have to catch up on keep being measured."""
    from .quoting import qi
    from .source import LOG_TABLE, open_source

    def read() -> tuple[int, float | None]:
        conn = open_source(cfg.source, readonly=True)
        try:
            # From the ends of the primary key (sequence numbers have no gaps): a count(*)
            # would scan the whole log while holding the file's read lock.
            row = conn.execute(f"SELECT coalesce(max(seq) - min(seq) + 1, 0), "
                               f"(SELECT ts FROM {qi(LOG_TABLE)} ORDER BY seq LIMIT 1) "
                               f"FROM {qi(LOG_TABLE)}").fetchone()
            return int(row[0]), row[1]
        finally:
            conn.close()

    while health.state in ("new", "snapshot"):
        with contextlib.suppress(Exception):
            backlog, oldest = await asyncio.to_thread(read)
            metrics.BACKLOG.set(backlog)
            metrics.LAG_SECONDS.set(max(0.0, time.time() - oldest) if oldest else 0.0)
        await asyncio.sleep(2)


async def background_verify(cfg: Config, target: TargetDSN, stop: asyncio.Event) -> None:
    """A full verification at a low rate once streaming has caught up, then every interval.
    Each clean pass is recorded, so cutover verifies only what changed since."""
    from .verify import verify

    delay = 5.0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set():
            return
        if metrics.BACKLOG._value.get() > 1000:  # catch up first
            delay = 10.0
            continue
        try:
            report = await verify(cfg, target, rate=cfg.verify_rate)
            _log.info("background_verify", ok=report["ok"], rows=report["rows"],
                      seconds=report["seconds"],
                      differences=[t["table"] for t in report["tables"] if not t["ok"]])
        except Exception as exc:  # noqa: BLE001 - verification must never stop replication
            metrics.ERRORS.labels("verify").inc()
            _log.warning("background_verify_failed", error=f"{type(exc).__name__}: {exc}")
        delay = cfg.verify_interval


def install_signal_handlers(stop: asyncio.Event, force_after: float) -> None:
    """First SIGTERM/SIGINT: drain and stop. Second: exit at once."""
    import os
    import signal

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
