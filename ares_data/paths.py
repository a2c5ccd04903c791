"""Where the toolkit writes files of its own (checkpoints, shards, reports)."""

from __future__ import annotations

import os
from pathlib import Path


def ares_home() -> Path:
    """`$ARES_HOME`, else `./.ares`: a per-project working directory, like `.git`."""
    return Path(os.environ.get("ARES_HOME") or ".ares").expanduser().resolve()


def default_checkpoint_dir(round: int, stage: str) -> Path:
    return ares_home() / "checkpoints" / f"round-{round}-{stage}"


def default_shard_dir(kind: str, round: int | None) -> Path:
    return ares_home() / "shards" / (f"{kind}-round-{round}" if round is not None else kind)
