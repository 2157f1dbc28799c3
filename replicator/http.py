"""The daemon's HTTP endpoint: ``/metrics`` (Prometheus), ``/healthz`` (the process is up) and
``/readyz`` (streaming or in the fallback window, no error, lag under ``metrics.ready_max_lag``),
read from the session's ``Progress``."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import log, metrics
from .config import parse_addr
from .errors import StartupError
from .session import Progress

_log = log.get("http")


class Health:
    """What /healthz and /readyz report."""

    def __init__(self, progress: Progress, ready_max_lag: float):
        self.progress = progress
        self.ready_max_lag = ready_max_lag

    def ready(self) -> tuple[bool, str]:
        p = self.progress
        if p.state not in ("streaming", "fallback"):
            return False, f"state {p.state}"
        if p.error:
            return False, "error"
        if p.lag_seconds > self.ready_max_lag:
            return False, f"lag {p.lag_seconds:.1f}s > {self.ready_max_lag}s"
        return True, "ok"


async def serve_http(addr: str, health: Health, stop: asyncio.Event, bound: asyncio.Future[Any]) -> None:
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

    try:
        server = await asyncio.start_server(handle, host, port)
    except OSError as exc:  # the port is taken (often: another daemon) or the address is not ours
        raise StartupError(
            f"metrics.addr {addr}: cannot listen there ({exc.strerror or exc}); another replicator "
            "daemon may be using it: set metrics.addr (or --metrics-addr) to a free port, or "
            "\"off\"") from None
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


