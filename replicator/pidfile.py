"""One daemon per source file: a pid file in the state directory, held with ``flock`` for the
daemon's lifetime (the kernel releases it when the process dies, kill -9 included)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

NAME = "daemon.lock"


def hold(state_dir: Path) -> tuple[IO[str] | None, str | None]:
    """(the open, locked file: keep it open), or (None, the pid of the process holding it)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fh = open(state_dir / NAME, "a+")  # noqa: SIM115 - held for the process lifetime
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        pid = fh.read().strip() or "?"
        fh.close()
        return None, pid
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    return fh, None


def holder(state_dir: Path) -> str | None:
    """The pid (as written) of the daemon holding the lock, or None when none runs."""
    path = state_dir / NAME
    if not path.exists():
        return None
    with open(path) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return fh.read().strip() or "?"
    return None
