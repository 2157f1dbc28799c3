"""How commands print: JSON or the human form, progress bars on a terminal, and how a target
is chosen and announced (the one place that resolves it)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import config, embedded, log
from ..dsn import TargetDSN, parse_target
from ..errors import ConfigError
from ..source import open_source
from .progress import TableProgress

_log = log.get("cli")


def emit(data: Any, as_json: bool, human: str) -> None:
    if as_json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print(human)


def progress() -> contextlib.AbstractContextManager[TableProgress | None]:
    """Per-table progress bars on a terminal; nothing when the output is a file or a pipe."""
    if not sys.stderr.isatty():
        return contextlib.nullcontext(None)
    return TableProgress()


def load_config(args: argparse.Namespace) -> config.Config:
    overrides: dict[str, Any] = {
        "source": str(args.source) if args.source else None,
        "target_url": getattr(args, "target", None),
        "schema_mode": getattr(args, "schema_mode", None),
        "metrics_addr": getattr(args, "metrics_addr", None),
        "log_level": args.log_level,
        "log_format": args.log_format,
    }
    return config.build(args.config, overrides)


def resolve_target(url: str | None, *, embedded_dir: Any = None, pooled: bool | None = None,
                   allow_embedded: bool = True, warn_pooled: bool = True,
                   source: Path | None = None, create: bool = True) -> TargetDSN:
    """The target: the URL given (flag, config or environment), else the embedded default
    (started if needed; the source file's own database, made only where ``create``) where the
    command allows it. Its password is registered for masking."""
    if url:
        target = parse_target(url)
    elif allow_embedded:
        emb = embedded.ensure_running(embedded_dir, source=source, create=create)
        log.add_secret(emb.owner_password)
        target = parse_target(emb.dsn)
        print(f"embedded Postgres: {target.masked} (credentials in "
              f"{emb.home / 'credentials.json'})", file=sys.stderr)
    else:
        raise ConfigError("--target: a Postgres DSN is required (or REPLICATOR_TARGET_URL / "
                          "DATABASE_URL)")
    log.add_secret(target.password)
    if pooled is not None:  # target.pooled in the config overrides the host-name guess
        target = replace(target, pooled=pooled)
    if target.pooled and warn_pooled:
        _log.warning(
            "pooled_endpoint", host=target.host,
            detail="a transaction pooler (a -pooler host, or target.pooled = true): the direct "
            "endpoint is better for migrations. Continuing with statement_cache_size=0",
        )
    return target


def config_target(cfg: config.Config, *, create: bool = False) -> TargetDSN:
    """The target of a replication command, from its configuration. For the embedded default
    the source is checked first, so a wrong --source creates no database for itself, and only
    the commands that start moving data (``create``: run, copy) make the file's database."""
    if not cfg.target_url:
        open_source(cfg.source, readonly=True).close()  # a missing or foreign file fails here
    return resolve_target(cfg.target_url, embedded_dir=cfg.embedded_dir, pooled=cfg.pooled,
                          source=cfg.source, create=create)


def command_target(args: argparse.Namespace) -> TargetDSN:
    """The target of a command without a full Config (doctor, queries), resolved as every other
    command does: --target, the config file's target.url, the environment, else the embedded
    default (the --source file's own database, in the config's target.embedded_dir)."""
    url = getattr(args, "target", None)
    values = config.load_file(args.config) if getattr(args, "config", None) else {}
    source, home = getattr(args, "source", None), values.get("embedded_dir")
    return resolve_target(url or values.get("target_url") or config.target_from_env(),
                          embedded_dir=Path(home) if home else None, warn_pooled=False,
                          source=Path(source) if source else None)
