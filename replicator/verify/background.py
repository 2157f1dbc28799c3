"""Background verification in the daemon: a full pass at a low rate once streaming has caught
up, then every ``verify.interval``. Each clean pass is recorded, so cutover verifies only what
changed since."""

from __future__ import annotations

import asyncio
import contextlib

from .. import log, metrics
from ..config import Config
from ..dsn import TargetDSN
from ..session import Progress
from . import verify

_log = log.get("verify")
CATCH_UP_FIRST = 1000  # changes: with a larger backlog, catching up comes first


async def background_verify(cfg: Config, target: TargetDSN, progress: Progress,
                            stop: asyncio.Event) -> None:
    delay = 5.0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set():
            return
        if progress.backlog > CATCH_UP_FIRST or progress.state != "streaming":
            # Catching up comes first; and in the fallback window SQLite follows Postgres, so a
            # difference may only be a change on its way back (`rollback` verifies everything).
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
