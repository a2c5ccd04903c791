"""How rollouts are sampled (`rollouts.py`, `rollout_engines.py`): one dataclass, each help text once.

Light on purpose (no torch): the CLI builds the sampling flags from these fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .options import option
from .placement import DEVICE_HELP, DTYPE_HELP, DtypeName

EngineName = Literal["hf", "vllm"]
ENGINE_HELP = "What samples rollouts: hf (transformers generate) or vllm (optional extra; needs a CUDA GPU)."


@dataclass
class SamplingSettings:
    """How rollouts are sampled; stored as JSON with every rationale. Each help text is written once, here."""

    max_new_tokens: int = option(256, "Length cap of a rationale, in tokens; a rollout cut there is `length`-finished.")
    temperature: float = option(1.0, "Sampling temperature (PPO scores log-probs at the same temperature).")
    top_k: int = option(0, "Sample among the k likeliest tokens; 0: the whole vocabulary (the distribution PPO "
                           "scores).")
    seed: int | None = option(None, "Seed for reproducible sampling.")
    batch_size: int = option(8, "Questions per generate call.")
    rollout_engine: EngineName = option("hf", ENGINE_HELP)
    device: str = option("auto", DEVICE_HELP)
    dtype: DtypeName = option("auto", DTYPE_HELP)
