"""One source for each trainer option: a dataclass field whose metadata holds its help text.

The configs (`ppo_config.py`, `sft_config.py`, `prm_config.py`, `rollout_config.SamplingSettings`)
declare their fields with `option`; the CLI builds its flags and their help from those fields, so a
default or a help text is written once.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any


def option(default: Any, help: str) -> Any:
    """A dataclass field with a default and its help text."""
    return field(default=default, metadata={"help": help})

