"""Settings of the sentence-reward PPO trainer (`ppo_trainer.py`).

Defaults follow the ARES paper's code. Each field's help text is written once, in its metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from ares_data.errors import TrainingError

RewardPlacement = Literal["sentence", "final"]


def _f(default, help: str):  # `help`: the dataclass-metadata convention (as in TRL)
    return field(default=default, metadata={"help": help})


@dataclass
class PPOConfig:
    # -- optimisation ---------------------------------------------------------------------
    learning_rate: float = _f(2e-5, "AdamW learning rate (policy and critic adapters, value head).")
    batch_size: int = _f(8, "Rollouts per PPO batch (one `step`).")
    mini_batch_size: int = _f(4, "Rollouts per gradient update inside a batch.")
    ppo_epochs: int = _f(4, "Passes over each batch.")
    max_grad_norm: float = _f(1.0, "Gradient norm clip over all trained parameters.")
    seed: int = _f(42, "Seed for torch (adapter init, mini-batch order).")
    # -- PPO objective --------------------------------------------------------------------
    clip_range: float = _f(0.2, "Policy ratio clip epsilon.")
    value_clip_range: float = _f(0.2, "How far a new value may move from the old one before clipping.")
    vf_coef: float = _f(0.1, "Weight of the value loss against the policy loss.")
    gamma: float = _f(1.0, "Discount over response tokens.")
    lam: float = _f(0.95, "GAE lambda.")
    whiten_advantages: bool = _f(True, "Normalise advantages over the batch's response tokens.")
    # -- rewards --------------------------------------------------------------------------
    kl_coef: float = _f(1e-4, "Per-token penalty on log p_policy - log p_reference.")
    neutral_score: float = _f(0.5, "Score that gives zero reward; a sentence earns score - neutral.")
    reward_placement: RewardPlacement = _f(
        "sentence",
        "`sentence`: each score at the last token of its sentence; `final`: the mean score "
        "at the last token only (the sparse baseline).",
    )
    # -- LoRA (policy and critic adapters) ------------------------------------------------
    lora_r: int = _f(8, "LoRA rank.")
    lora_alpha: int = _f(16, "LoRA scaling numerator.")
    lora_dropout: float = _f(0.05, "Dropout on the LoRA input.")
    lora_target_modules: str | list[str] = _f("all-linear", "Modules that get LoRA (PEFT syntax).")
    lora_vision: bool = _f(False, "On a vision-language student, `all-linear` covers the vision tower too.")
    # -- data -----------------------------------------------------------------------------
    max_length: int = _f(
        1024, "Prompt + response tokens; a longer response is cut and its late sentences lose their reward."
    )
    append_eos: bool = _f(True, "Append the EOS token to each response, so stopping is learnt too.")

    def __post_init__(self) -> None:
        if self.reward_placement not in get_args(RewardPlacement):
            raise TrainingError(f"reward_placement must be one of {get_args(RewardPlacement)}, "
                                f"not {self.reward_placement!r}")
        if not 0 < self.mini_batch_size <= self.batch_size:
            raise TrainingError("mini_batch_size must be between 1 and batch_size")
