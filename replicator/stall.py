"""Where a daemon that seems stuck is waiting: every asyncio task's chain of awaits and every
thread's stack, logged on SIGUSR1 (``kill -USR1 <pid>``) or by the turn watchdog when one turn of
the apply loop runs far longer than any bounded step may. Nothing here changes what the daemon
does; it only says where it is."""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import sys
import time
import traceback
from typing import Any

from . import log

_log = log.get("stall")


def dump_tasks(reason: str = "SIGUSR1", **fields: Any) -> None:
    tasks = {task.get_name(): _awaiting(task.get_coro()) for task in asyncio.all_tasks()}
    threads = {str(ident): [f"{s.filename.rsplit('/', 2)[-1]}:{s.lineno} {s.name}"
                            for s in traceback.extract_stack(frame)[-10:]]
               for ident, frame in sys._current_frames().items()}
    _log.warning("task_dump", reason=reason, tasks=tasks, threads=threads, **fields)


def _awaiting(coro: object) -> list[str]:
    """The chain of coroutines a task waits in, outermost first (file:line function)."""
    chain: list[str] = []
    while coro is not None and len(chain) < 40:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None) \
            or getattr(coro, "gi_frame", None)
        if frame is None:
            chain.append(type(coro).__name__)
            break
        chain.append(f"{frame.f_code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno} "
                     f"{frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None) \
            or getattr(coro, "gi_yieldfrom", None)
    return chain


class TurnWatch:
    """Arms at the start of a turn, disarms at its end. A turn still running after ``after``
    seconds logs ``turn_stalled`` with the task dump (once per turn); if the event loop itself is
    blocked, faulthandler's own thread writes every thread's stack to stderr instead."""

    def __init__(self, after: float):
        self.after = after
        self.started: float | None = None
        self.reported = False
        self._task: asyncio.Task[None] | None = None

    def __enter__(self) -> TurnWatch:
        self.started, self.reported = time.monotonic(), False
        with contextlib.suppress(RuntimeError, ValueError):
            faulthandler.dump_traceback_later(self.after * 2, file=sys.stderr)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._watch(), name="turn-watch")
        return self

    def __exit__(self, *exc: object) -> None:
        self.started = None
        faulthandler.cancel_dump_traceback_later()

    def close(self) -> None:
        faulthandler.cancel_dump_traceback_later()
        if self._task is not None:
            self._task.cancel()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(max(0.5, self.after / 4))
            started = self.started
            if started is not None and not self.reported \
                    and time.monotonic() - started > self.after:
                self.reported = True
                dump_tasks("turn_stalled", seconds=round(time.monotonic() - started, 1))
