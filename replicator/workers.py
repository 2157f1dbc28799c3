"""Worker processes for the work one core cannot keep up with (the snapshot's units, a full
verification's tables): a ``spawn`` pool whose workers die with their parent, and failures
carried back across the process boundary as plain text with their kind (asyncpg's exceptions
do not pickle), turned back into the right ``ReplicatorError`` in the parent."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sqlite3
import threading
import time
from concurrent.futures import ProcessPoolExecutor

from . import log
from .errors import (
    BadValueError,
    ReplicatorError,
    SourceError,
    StartupError,
    TargetError,
    is_retryable_pg,
)


class WorkerError(Exception):
    """A worker's failure, carried back as plain text."""

    def __init__(self, message: str, retryable: bool = False, kind: str = "runtime"):
        super().__init__(message, retryable, kind)
        self.message, self.retryable, self.kind = message, retryable, kind


def pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes (spawned: no inherited event loop, threads or sockets)."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(os.getpid(),))


def _worker_init(ppid: int) -> None:
    """A pool worker dies with its parent, even while idle waiting for work: the kernel sends it
    SIGKILL (Linux), and a watchdog thread checks the parent anyway."""
    import ctypes
    import signal

    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != ppid:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == ppid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def carried(exc: BaseException, what: str) -> WorkerError:
    """In a worker: ``exc`` as a WorkerError that pickles (``what`` names the work, for SQLite
    errors)."""
    if isinstance(exc, ReplicatorError):
        return WorkerError(str(exc), exc.retryable, exc.kind)
    if isinstance(exc, sqlite3.Error):
        return WorkerError(f"source: {what}: {exc}", False, "source")
    return WorkerError(f"{type(exc).__name__}: {log.scrub(str(exc))}", is_retryable_pg(exc),
                       "target")


def restored(exc: WorkerError) -> ReplicatorError:
    """In the parent: the ReplicatorError a worker's failure stands for."""
    if exc.kind == "bad_value":
        return BadValueError(exc.message)
    if exc.kind == "startup":
        return StartupError(exc.message)
    if exc.kind == "source":
        return SourceError(exc.message)
    return TargetError(exc.message, retryable=exc.retryable)
