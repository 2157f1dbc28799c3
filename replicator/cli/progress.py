"""Per-table progress bars (rows/s and ETA) for the snapshot, on a terminal only."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from .. import log


class TableProgress:
    """Callable ``(table, done, total)``; a context manager that owns the display."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} rows/s"),
            TimeRemainingColumn(),
            console=Console(file=sys.stderr),
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> TableProgress:
        self.progress.start()
        log.redirect(_ConsoleLines(self.progress.console))  # log lines above the bars
        return self

    def __exit__(self, *exc: object) -> None:
        log.redirect(None)
        self.progress.stop()

    def __call__(self, table: str, done: int, total: int) -> None:
        task = self.tasks.get(table)
        if task is None:
            task = self.tasks[table] = self.progress.add_task(table, total=total, rate="-")
        elapsed = self.progress.tasks[task].elapsed or 0
        rate = f"{done / elapsed:,.0f}" if elapsed > 0 else "-"
        self.progress.update(task, completed=done, total=max(total, done), rate=rate)


class _ConsoleLines:
    """A file-like object printing whole lines through rich (keeps the live bars intact)."""

    def __init__(self, console: Console) -> None:
        self.console, self.buf = console, ""

    def write(self, text: str) -> int:
        from rich.text import Text

        self.buf += text
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            self.console.print(Text.from_ansi(line))
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True
