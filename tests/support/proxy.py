"""A TCP proxy in front of Postgres that tests control: cut the link, black-hole it, delay or refuse
new connections (a Neon cold start or a restart), lose the acknowledgement of a COMMIT, break a COPY.

It runs its own asyncio loop in a background thread, so sync and async tests drive it the same way;
every control method is thread-safe and takes effect before it returns.

    with Proxy(pg_env.host, pg_env.port) as proxy:
        dsn = proxy.dsn_for(target_dsn)      # same DSN, through the proxy
        ...
        proxy.cut()                          # RST every open connection, both sides
        proxy.blackhole(True)                # connections stay open, no byte moves either way
        proxy.delay_connect(3.0)             # new connections wait 3 s before reaching Postgres
        proxy.refuse(True)                   # new connections are reset at once
        proxy.cut_after_commit()             # next COMMIT (or the Sync that commits the daemon's
                                             # one-statement batch) reaches the server; its reply
                                             # never reaches the client, whose connection is reset
        proxy.cut_during_copy(after=2)       # next COPY FROM STDIN is cut after 2 CopyData messages
        proxy.stats()                        # counters

The client->server stream is split into Postgres protocol messages (only as far as needed): the
untyped SSLRequest / GSSENCRequest / CancelRequest / StartupMessage first, then typed messages
(1-byte type, 4-byte big-endian length including itself, body). Frames may span reads; bytes are
forwarded message by message, so a cut lands exactly on a message boundary. If the client
negotiates TLS the stream is opaque and forwarded raw (the COMMIT / COPY triggers then never fire).
Server->client bytes are relayed as they come.

While black-holed, bytes are held, not dropped: when the hole closes they flow again, as TCP
retransmission would deliver them after a partition heals.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
_READY_FOR_QUERY = b"Z\x00\x00\x00\x05"
_TERMINATE = b"X\x00\x00\x00\x04"
_READ_SIZE = 1 << 16


def rewrite_dsn(dsn: str, host: str, port: int) -> str:
    """``dsn`` (a postgresql:// URL) with its host and port replaced; user, password, database and
    query parameters are kept byte for byte."""
    parts = urlsplit(dsn)
    netloc = parts.netloc
    userinfo = ""
    if "@" in netloc:
        userinfo, _, _hostport = netloc.rpartition("@")
        userinfo += "@"
    host_text = f"[{host}]" if ":" in host else host
    return urlunsplit(parts._replace(netloc=f"{userinfo}{host_text}:{port}"))


class FrameSplitter:
    """Splits the client->server byte stream into whole Postgres frontend messages.

    ``feed(data)`` returns a list of ``(kind, frame)``: ``kind`` is the one-byte message type
    (``b"Q"``, ``b"d"``...) for typed messages, ``None`` for the untyped start-up messages and for
    raw bytes once the stream is opaque (TLS, or something that is not the Postgres protocol).
    Incomplete frames are kept until the rest arrives."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.typed = False  # after the StartupMessage
        self.opaque = False  # TLS or unparseable: forward raw

    def feed(self, data: bytes) -> list[tuple[bytes | None, bytes]]:
        if self.opaque:
            return [(None, bytes(data))] if data else []
        self.buf += data
        out: list[tuple[bytes | None, bytes]] = []
        while self.buf and not self.opaque:
            frame = self._typed_frame() if self.typed else self._untyped_frame()
            if frame is None:
                break
            out.append(frame)
        if self.opaque and self.buf:
            out.append((None, bytes(self.buf)))
            self.buf.clear()
        return out

    def _untyped_frame(self) -> tuple[bytes | None, bytes] | None:
        if self.buf[0] == 0x16:  # a TLS ClientHello after the server accepted SSLRequest
            self.opaque = True
            return None
        if len(self.buf) < 8:
            return None
        length, code = struct.unpack("!ii", self.buf[:8])
        if length < 8 or length > 10_000:
            self.opaque = True
            return None
        if len(self.buf) < length:
            return None
        frame = bytes(self.buf[:length])
        del self.buf[:length]
        if code >> 16 == 3:  # StartupMessage, protocol 3.x: typed messages follow
            self.typed = True
        elif code not in (SSL_REQUEST, GSSENC_REQUEST, CANCEL_REQUEST):
            self.opaque = True
        return None, frame

    def _typed_frame(self) -> tuple[bytes | None, bytes] | None:
        if len(self.buf) < 5:
            return None
        (length,) = struct.unpack("!i", self.buf[1:5])
        if length < 4:
            self.opaque = True
            return None
        if len(self.buf) < 1 + length:
            return None
        frame = bytes(self.buf[: 1 + length])
        del self.buf[: 1 + length]
        return frame[:1], frame


def query_text(frame: bytes) -> str:
    """The SQL of a simple-query ('Q') frame."""
    return frame[5:].rstrip(b"\x00").decode("utf-8", "replace")


def _is_commit(frame: bytes) -> bool:
    return query_text(frame).lstrip().upper().startswith("COMMIT")


def _cstrings(frame: bytes, n: int) -> list[str]:
    """The first ``n`` NUL-terminated strings of a typed frame's body."""
    return [p.decode("utf-8", "replace") for p in frame[5:].split(b"\x00", n)[:n]]


# The daemon's one-statement batch (apply.Applier.write_one_statement): the Sync after its
# Execute commits it, as a COMMIT would.
_ONE_STATEMENT_BATCH = "_replicator.state SET cursor"


def _reset(writer: asyncio.StreamWriter | None) -> None:
    """Close a connection RST-style: SO_LINGER 0, then abort (no FIN, no flush)."""
    if writer is None:
        return
    transport = writer.transport
    if transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None and not writer.transport.is_closing():
        writer.close()


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, proxy: Proxy, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter):
        self.proxy = proxy
        self.client_r, self.client_w = client_r, client_w
        self.server_r: asyncio.StreamReader | None = None
        self.server_w: asyncio.StreamWriter | None = None
        self.splitter = FrameSplitter()
        self.swallow = False  # the client is gone: discard the server's reply, then hang up
        self.copy_cut_after: int | None = None  # claimed a cut_during_copy: cut after N CopyData
        self.copy_messages = 0
        self.statements: dict[str, str] = {}  # prepared statement name -> SQL (Parse frames)
        self.batch_bound = False  # a one-statement batch was bound: its Sync commits it
        self.tasks: list[asyncio.Task] = []
        self.dead = False

    def reset(self) -> None:
        """Cut both sides now."""
        self.dead = True
        _reset(self.client_w)
        _reset(self.server_w)
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()

    async def run(self) -> None:
        p = self.proxy
        if p._refusing:
            p.counters["refused"] += 1
            _reset(self.client_w)
            return
        if p._connect_delay > 0:
            await asyncio.sleep(p._connect_delay)
        try:
            self.server_r, self.server_w = await asyncio.open_connection(p.target_host, p.target_port)
        except OSError:
            p.counters["upstream_failures"] += 1
            _reset(self.client_w)
            return
        if self.dead:  # cut() while we were connecting
            _reset(self.server_w)
            return
        up = asyncio.create_task(self._client_to_server())
        down = asyncio.create_task(self._server_to_client())
        self.tasks += [up, down]
        await asyncio.gather(up, down, return_exceptions=True)
        _close(self.client_w)
        _close(self.server_w)

    async def _client_to_server(self) -> None:
        p = self.proxy
        try:
            while True:
                data = await self.client_r.read(_READ_SIZE)
                if not data:
                    break
                for kind, frame in self.splitter.feed(data):
                    action = self._inspect(kind, frame)
                    if action == "cut_before":
                        p._count_cut("copy_cuts")
                        self.reset()
                        return
                    await p._flowing.wait()
                    if self.server_w.transport.is_closing():
                        return
                    self.server_w.write(frame)
                    p.counters["bytes_up"] += len(frame)
                    if action == "cut_after":
                        p._count_cut("copy_cuts")
                        self.reset()
                        return
                    if action == "lose_reply":
                        # The COMMIT is on its way to the server; the client never hears back.
                        self.swallow = True
                        p._count_cut("commit_cuts")
                        _reset(self.client_w)
                        return
                await self.server_w.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        if not self.swallow:
            _close(self.server_w)

    def _inspect(self, kind: bytes | None, frame: bytes) -> str | None:
        p = self.proxy
        if kind == b"P":
            name, sql = _cstrings(frame, 2)
            self.statements[name] = sql
        elif kind == b"B":
            self.batch_bound = _ONE_STATEMENT_BATCH in self.statements.get(_cstrings(frame, 2)[1], "")
        if (kind == b"Q" and _is_commit(frame)) or (kind == b"S" and self.batch_bound):
            self.batch_bound = False
            p.counters["commits_seen"] += 1
            if p._commit_cuts_pending > 0:
                p._commit_cuts_pending -= 1
                return "lose_reply"
        elif kind == b"d":
            if self.copy_cut_after is None and p._copy_cuts_pending:
                self.copy_cut_after = p._copy_cuts_pending.pop(0)
            self.copy_messages += 1
            if self.copy_cut_after is not None and self.copy_messages >= self.copy_cut_after:
                return "cut_after"
        elif kind in (b"c", b"f") and self.copy_cut_after is not None:
            return "cut_before"  # the COPY would finish before enough CopyData went by
        return None

    async def _server_to_client(self) -> None:
        p = self.proxy
        tail = b""
        try:
            loop = asyncio.get_running_loop()
            give_up = None
            while True:
                if self.swallow:
                    give_up = give_up or loop.time() + 10.0
                    timeout = max(0.0, give_up - loop.time())
                    try:
                        data = await asyncio.wait_for(self.server_r.read(_READ_SIZE), timeout)
                    except TimeoutError:
                        break
                else:
                    data = await self.server_r.read(_READ_SIZE)
                if not data:
                    break
                if self.swallow:
                    # Discard the reply; once the server says ReadyForQuery the COMMIT is done.
                    p.counters["bytes_swallowed"] += len(data)
                    tail = (tail + data)[-6:]
                    if tail[:5] == _READY_FOR_QUERY:
                        break
                    continue
                await p._flowing.wait()
                if self.swallow:
                    continue
                if self.client_w.transport.is_closing():
                    break
                self.client_w.write(data)
                p.counters["bytes_down"] += len(data)
                await self.client_w.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        if self.swallow and self.server_w is not None and not self.server_w.transport.is_closing():
            with contextlib.suppress(OSError):
                self.server_w.write(_TERMINATE)
        _close(self.server_w)
        _close(self.client_w)


class Proxy:
    """A controllable TCP proxy to ``target_host:target_port``; see the module docstring."""

    def __init__(self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1",
                 listen_port: int = 0):
        self.target_host, self.target_port = target_host, target_port
        self.listen_host, self._listen_port = listen_host, listen_port
        self.counters: dict[str, int] = dict.fromkeys(
            ("connections", "refused", "upstream_failures", "bytes_up", "bytes_down",
             "bytes_swallowed", "cuts", "commit_cuts", "copy_cuts", "commits_seen"), 0)
        self._links: set[_Link] = set()
        self._refusing = False
        self._connect_delay = 0.0
        self._commit_cuts_pending = 0
        self._copy_cuts_pending: list[int] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._handlers: set[asyncio.Task] = set()

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> Proxy:
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._open())
            except BaseException as exc:  # noqa: BLE001 - handed to start()
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=main, name=f"pg-proxy-{self.target_port}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    async def _open(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, self.listen_host, self._listen_port)
        self._listen_port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._call(self._shutdown)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None

    async def _shutdown(self) -> None:
        self._server.close()
        for link in list(self._links):
            link.reset()
        self._flowing.set()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await self._server.wait_closed()

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._listen_port

    @property
    def host(self) -> str:
        return self.listen_host

    def dsn_for(self, dsn: str) -> str:
        """``dsn`` routed through this proxy."""
        return rewrite_dsn(dsn, self.listen_host, self.port)

    # -- controls (thread-safe) ------------------------------------------------------------------

    def cut(self) -> int:
        """Reset every open connection, both directions, now. Returns how many were cut."""

        async def go() -> int:
            links = list(self._links)
            for link in links:
                link.reset()
            self.counters["cuts"] += len(links)
            return len(links)

        return self._call(go)

    def blackhole(self, on: bool = True) -> None:
        """Stop (or resume) moving bytes in both directions, without closing anything. New
        connections are still accepted, and stay silent."""

        async def go() -> None:
            if on:
                self._flowing.clear()
            else:
                self._flowing.set()

        self._call(go)

    def delay_connect(self, seconds: float) -> None:
        """Hold each new client connection ``seconds`` before connecting upstream (0: off)."""
        self._set(lambda: setattr(self, "_connect_delay", float(seconds)))

    def refuse(self, on: bool = True) -> None:
        """Reset new connections as soon as they are accepted (or stop doing so)."""
        self._set(lambda: setattr(self, "_refusing", bool(on)))

    def cut_after_commit(self, n: int = 1) -> None:
        """The next ``n`` simple-query COMMITs (or Syncs that commit a one-statement batch) are
        forwarded to the server, then the client's
        connection is reset before the server's reply reaches it: the commit happens, the client
        does not learn it. The server connection stays until its reply came, then closes cleanly."""

        def go() -> None:
            self._commit_cuts_pending += n

        self._set(go)

    def cut_during_copy(self, after: int = 2) -> None:
        """The next connection that streams CopyData is reset (both sides) right after forwarding
        ``after`` CopyData messages, or before its CopyDone if the COPY is shorter."""
        if after < 1:
            raise ValueError("after must be >= 1")
        self._set(lambda: self._copy_cuts_pending.append(after))

    def disarm(self) -> None:
        """Forget pending commit / copy cuts; stop refusing, delaying and black-holing."""

        async def go() -> None:
            self._commit_cuts_pending = 0
            self._copy_cuts_pending.clear()
            self._refusing = False
            self._connect_delay = 0.0
            self._flowing.set()

        self._call(go)

    # -- counters --------------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        out = self._call(self._snapshot_counters)
        return out

    async def _snapshot_counters(self) -> dict[str, int]:
        return {**self.counters, "active": len(self._links),
                "pending_commit_cuts": self._commit_cuts_pending,
                "pending_copy_cuts": len(self._copy_cuts_pending)}

    @property
    def connections(self) -> int:
        return self.counters["connections"]

    @property
    def active(self) -> int:
        return len(self._links)

    @property
    def bytes_up(self) -> int:
        return self.counters["bytes_up"]

    @property
    def bytes_down(self) -> int:
        return self.counters["bytes_down"]

    @property
    def cuts(self) -> int:
        """Connections cut by any means (cut(), a lost COMMIT reply, a broken COPY)."""
        return self.counters["cuts"]

    # -- internals -------------------------------------------------------------------------------

    def _count_cut(self, kind: str) -> None:
        self.counters[kind] += 1
        self.counters["cuts"] += 1

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counters["connections"] += 1
        link = _Link(self, reader, writer)
        task = asyncio.current_task()
        self._handlers.add(task)
        link.tasks.append(task)
        self._links.add(link)
        try:
            await link.run()
        except asyncio.CancelledError:
            link.reset()
        except Exception:  # noqa: BLE001 - a proxy never dies of one connection
            link.reset()
        finally:
            self._links.discard(link)
            self._handlers.discard(task)
            _close(link.client_w)
            _close(link.server_w)

    def _set(self, fn: Callable[[], None]) -> None:
        async def go() -> None:
            fn()

        self._call(go)

    def _call(self, coro_fn: Callable[[], Any]) -> Any:
        if self._loop is None or self._thread is None:
            raise RuntimeError("proxy not started")
        if threading.current_thread() is self._thread:
            raise RuntimeError("proxy controls are for other threads")
        return asyncio.run_coroutine_threadsafe(coro_fn(), self._loop).result(15)
