"""A backup of the SQLite file before the replicator first writes to it.

SQLite's online backup API copies the database consistently (one read transaction), the copy is
gzip-compressed next to the state directory, and the original is never touched or deleted.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import time
from pathlib import Path

from . import log
from .snapshot.frozen import online_copy

_log = log.get("backup")


def make_backup(source: Path, folder: Path) -> Path:
    """Back ``source`` up into ``folder`` as ``<name>-<UTC time>.sqlite.gz``; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = folder / f"{source.name}-{stamp}.sqlite.gz"
    tmp = folder / f".{source.name}-{stamp}.tmp"
    started = time.monotonic()
    online_copy(source, tmp)
    with open(tmp, "rb") as raw, gzip.open(str(target) + ".part", "wb", compresslevel=6) as packed:
        shutil.copyfileobj(raw, packed, length=1 << 20)
    os.replace(str(target) + ".part", target)
    tmp.unlink()
    _log.info("backup_written", path=str(target), bytes=target.stat().st_size,
              seconds=round(time.monotonic() - started, 3))
    return target


def archive(source: Path, folder: Path) -> tuple[Path, str]:
    """At the end of the fallback window: the file compressed next to the backups, with its
    SHA-256 in ``<archive>.sha256`` (``sha256sum -c`` format). Returns (path, hex digest)."""
    path = make_backup(source, folder)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    Path(str(path) + ".sha256").write_text(f"{digest.hexdigest()}  {path.name}\n")
    return path, digest.hexdigest()
