"""The daemon's terminal screen (on a terminal only): per-table bars while the snapshot runs,
then one live status line, redrawn in place: state, lag, backlog, changes/s, errors, quarantine.
Log lines scroll above it."""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from .. import log
from ..session import Progress as DaemonProgress

RATE_WINDOW = 10.0  # seconds the screen's changes/s looks back

_STATE_STYLE = {"streaming": "bold green", "fallback": "bold magenta", "snapshot": "bold cyan",
                "cutover": "bold yellow", "done": "bold green", "error": "bold red", "new": "bold"}


class TableProgress:
    """Callable ``(table, done, total)`` for the snapshot's bars; ``watch`` adds the daemon's
    live status. A context manager that owns the terminal while it runs."""

    def __init__(self) -> None:
        self.console = Console(file=sys.stderr)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} rows/s"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.tasks: dict[str, TaskID] = {}
        self.first: dict[str, tuple[float, int]] = {}  # table -> (when, rows) it first moved
        self.daemon: DaemonProgress | None = None
        self.applied_seen: deque[tuple[float, int]] = deque()  # (when, applied) over RATE_WINDOW
        self.live = Live(_Screen(self), console=self.console, refresh_per_second=4,
                         transient=False)

    def __enter__(self) -> TableProgress:
        self.live.start()
        log.redirect(_ConsoleLines(self.console))  # log lines above the screen
        return self

    def __exit__(self, *exc: object) -> None:
        log.redirect(None)
        self.live.stop()

    def watch(self, daemon: DaemonProgress) -> None:
        """Show the daemon's live state under (and, once streaming, instead of) the bars."""
        self.daemon = daemon

    def __call__(self, table: str, done: int, total: int) -> None:
        task = self.tasks.get(table)
        if task is None:
            task = self.tasks[table] = self.progress.add_task(table, total=total, rate="-")
        # rows/s from the moment the table's rows started to move (a table waiting for a worker
        # is not slow), over the rows moved since: the rate the log's table_copied line gives.
        now = time.monotonic()
        if done and table not in self.first:
            self.first[table] = (now, done)
        when, base = self.first.get(table, (now, done))
        rate = f"{(done - base) / (now - when):,.0f}" if now - when > 0.5 else "-"
        self.progress.update(task, completed=done, total=max(total, done), rate=rate)

    def status(self) -> Text | None:
        p = self.daemon
        if p is None:
            return None
        now = time.monotonic()
        up = max(now - p.started, 1e-9)
        line = Text()
        line.append(f" {p.state} ", style=_STATE_STYLE.get(p.state, "bold"))
        line.append(f"  lag {p.lag_seconds:.2f} s  backlog {p.backlog:,}  "
                    f"applied {p.applied:,} ({self._rate(now, p.applied):,.0f}/s)  ")
        line.append(f"errors {p.errors}", style="red" if p.errors else "")
        line.append("  ")
        line.append(f"quarantine {p.quarantined:,}", style="yellow" if p.quarantined else "")
        line.append(f"  up {_duration(up)}")
        return line

    def _rate(self, now: float, applied: int) -> float:
        """Changes applied per second over the last RATE_WINDOW seconds (what is happening now,
        not an average since the start)."""
        seen = self.applied_seen
        if not seen or applied < seen[-1][1]:
            seen.clear()
        seen.append((now, applied))
        while len(seen) > 2 and now - seen[1][0] >= RATE_WINDOW:
            seen.popleft()
        when, before = seen[0]
        return (applied - before) / (now - when) if now - when >= 1.0 else 0.0

    def snapshot_running(self) -> bool:
        return self.daemon is None or self.daemon.state in ("new", "snapshot")


class _Screen:
    """What Live redraws: the bars while the snapshot runs, then the status line alone."""

    def __init__(self, owner: TableProgress) -> None:
        self.owner = owner

    def __rich__(self) -> Any:
        parts: list[Any] = []
        if self.owner.snapshot_running() and self.owner.tasks:
            parts.append(self.owner.progress.get_renderable())
        status = self.owner.status()
        if status is not None:
            parts.append(status)
        return Group(*parts)


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class _ConsoleLines:
    """A file-like object printing whole lines through rich (keeps the live screen intact)."""

    def __init__(self, console: Console) -> None:
        self.console, self.buf = console, ""

    def write(self, text: str) -> int:
        self.buf += text
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            self.console.print(Text.from_ansi(line))
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True
