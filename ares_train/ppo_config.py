"""Settings of the sentence-reward PPO trainer (`ppo_trainer.py`).

Defaults follow the ARES paper's code. Each field's help text is written once, in its metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from ares_data.errors import TrainingError

from .options import option
from .placement import DEVICE_HELP, DTYPE_HELP, DtypeName
from .tracking import REPORT_TO_HELP, ReportTo

RewardPlacement = Literal["sentence", "final"]



@dataclass
class PPOConfig:
    # -- optimisation ---------------------------------------------------------------------
    learning_rate: float = option(2e-5, "AdamW learning rate (adapters and value head).")
    batch_size: int = option(8, "Rollouts per PPO batch (one `step`).")
    mini_batch_size: int = option(4, "Rollouts per gradient update inside a batch.")
    ppo_epochs: int = option(4, "Passes over each batch.")
    max_grad_norm: float = option(1.0, "Gradient norm clip over all trained parameters.")
    seed: int = option(42, "Seed for torch (adapter init, mini-batch order).")
    # -- PPO objective --------------------------------------------------------------------
    clip_range: float = option(0.2, "Policy ratio clip epsilon.")
    value_clip_range: float = option(0.2, "How far a new value may move from the old one before clipping.")
    vf_coef: float = option(0.1, "Weight of the value loss against the policy loss.")
    gamma: float = option(1.0, "Discount over response tokens.")
    lam: float = option(0.95, "GAE lambda.")
    whiten_advantages: bool = option(True, "Normalise advantages over the batch's response tokens.")
    behaviour_is_cap: float = option(
        2.0, "Cap of each token's loss weight min(p_policy / p_sampler, cap): later batches of a round were "
             "sampled by an older policy (truncated importance sampling, verl's rollout_is); 0: off.")
    # -- rewards --------------------------------------------------------------------------
    kl_coef: float = option(1e-4, "Per-token penalty on log p_policy - log p_reference.")
    neutral_score: float = option(0.5, "Score that gives zero reward; a sentence earns score - neutral.")
    reward_placement: RewardPlacement = option(
        "sentence",
        "`sentence`: each score at the last token of its sentence; `final`: the mean score "
        "at the last token only (the sparse baseline).",
    )
    # -- LoRA (policy and critic adapters) ------------------------------------------------
    lora_r: int = option(8, "LoRA rank.")
    lora_alpha: int = option(16, "LoRA scaling numerator.")
    lora_dropout: float = option(0.05, "Dropout on the LoRA input (SFT only: PPO turns every dropout off, as TRL "
                                       "does, so its first forward reproduces the rollouts' log-probs).")
    lora_target_modules: str | list[str] = option("all-linear", "Modules that get LoRA (PEFT syntax).")
    lora_vision: bool = option(False, "On a vision-language student, `all-linear` covers the vision tower too.")
    # -- data -----------------------------------------------------------------------------
    max_length: int = option(1024, "Prompt + response tokens; a longer response is cut (late sentences lose "
                                   "their reward).")
    append_eos: bool = option(True, "Append EOS to rollouts re-tokenised from their text (stored before token "
                                    "ids were kept), as if they had stopped.")
    logits_chunk_tokens: int = option(
        512, "Response tokens whose vocabulary logits exist at once: bounds memory for large vocabularies.")
    # -- critic ---------------------------------------------------------------------------
    critic_warmup_steps: int = option(0, "First PPO batches in which only the critic learns (the policy stays "
                                         "put).")
    # -- placement ------------------------------------------------------------------------
    device: str = option("auto", DEVICE_HELP)
    dtype: DtypeName = option("auto", DTYPE_HELP)
    gradient_checkpointing: bool = option(False, "Recompute activations in the backward pass (less memory, ~30% "
                                                 "slower).")
    # -- logging ------------------------------------------------------------------------
    report_to: ReportTo = option("none", REPORT_TO_HELP)

    def __post_init__(self) -> None:
        if self.reward_placement not in get_args(RewardPlacement):
            raise TrainingError(f"reward_placement must be one of {get_args(RewardPlacement)}, "
                                f"not {self.reward_placement!r}")
        if not 0 < self.mini_batch_size <= self.batch_size:
            raise TrainingError("mini_batch_size must be between 1 and batch_size")
        if self.behaviour_is_cap < 0:
            raise TrainingError("behaviour_is_cap must be at least 0 (0 turns the correction off)")
        if self.logits_chunk_tokens < 1 or self.critic_warmup_steps < 0:
            raise TrainingError("logits_chunk_tokens must be at least 1 and critic_warmup_steps at least 0")
