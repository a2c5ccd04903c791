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
Advantage = Literal["gae", "grpo", "rloo"]
LossType = Literal["bnpo", "grpo"]
ScaleRewards = Literal["group", "batch", "none"]
OnStale = Literal["warn", "stop"]
CRITIC_FREE = ("grpo", "rloo")


@dataclass
class PPOConfig:
    # -- optimisation ---------------------------------------------------------------------
    learning_rate: float = option(2e-5, "AdamW learning rate (adapters and value head).")
    batch_size: int = option(8, "Rollouts per PPO batch (one `step`).")
    mini_batch_size: int = option(4, "Rollouts per gradient update inside a batch.")
    ppo_epochs: int = option(4, "Passes over each batch.")
    max_grad_norm: float = option(1.0, "Gradient norm clip, for the policy and the critic separately.")
    weight_decay: float = option(0.0, "AdamW weight decay.")
    seed: int = option(42, "Seed for torch (adapter init, mini-batch order).")
    # -- advantage estimator --------------------------------------------------------------
    advantage: Advantage = option(
        "gae", "`gae`: with a critic; `grpo`: critic-free, sentence rewards normalised within the question's k "
               "rollouts (DeepSeekMath process GRPO); `rloo`: critic-free leave-one-out, final reward only. "
               "grpo/rloo need k >= 2.")
    loss_type: LossType = option(
        "bnpo", "TRL's names: `bnpo` averages the loss over tokens, `grpo` over each response, then responses.")
    scale_rewards: ScaleRewards = option(
        "group", "grpo: divide centred rewards by the std of the question's group, the batch, or `none` (Dr. GRPO).")
    # -- PPO objective --------------------------------------------------------------------
    clip_range: float = option(0.2, "Policy ratio clip epsilon.")
    value_clip_range: float = option(0.2, "How far a new value may move from the old one before clipping.")
    vf_coef: float = option(0.1, "Weight of the value loss against the policy loss.")
    gamma: float = option(1.0, "Discount over response tokens.")
    lam: float = option(0.95, "GAE lambda.")
    whiten_advantages: bool = option(True, "Normalise advantages over the batch's response tokens (gae only).")
    behaviour_is_cap: float = option(
        2.0, "Cap of a token's off-policy loss weight min(p_policy / p_sampler, cap) (verl's rollout_is); 0: off.")
    max_capped_share: float = option(
        0.2, "Staleness bound: a batch with more of its tokens at the cap is stale (see on_stale). 1: never.")
    on_stale: OnStale = option(
        "warn", "A stale batch: `warn`, or `stop` training (what was trained is saved; `stopped_stale`).")
    # -- rewards --------------------------------------------------------------------------
    kl_coef: float = option(1e-4, "KL to the reference: gae, a per-token reward penalty; grpo/rloo, the weight "
                                  "of the k3 term in the loss.")
    neutral_score: float = option(0.5, "Score that gives zero reward; a sentence earns score - neutral.")
    reward_placement: RewardPlacement = option(
        "sentence",
        "`sentence`: each score at its sentence's last token; `final`: the mean score at the last token.",
    )
    # -- LoRA (policy and critic adapters) ------------------------------------------------
    lora_r: int = option(8, "LoRA rank.")
    lora_alpha: int = option(16, "LoRA scaling numerator.")
    lora_dropout: float = option(0.05, "Dropout on the LoRA input (SFT only: PPO turns every dropout off, as TRL "
                                       "does, so its first forward reproduces the rollouts' log-probs).")
    lora_target_modules: str | list[str] = option("all-linear", "Modules that get LoRA (PEFT syntax).")
    lora_vision: bool = option(False, "On a vision-language student, `all-linear` covers the vision tower too.")
    # -- data -----------------------------------------------------------------------------
    max_length: int = option(1024, "Prompt + response tokens; a longer response is cut.")
    append_eos: bool = option(True, "Append EOS to rollouts stored without token ids (re-tokenised from text).")
    logits_chunk_tokens: int = option(
        512, "Response tokens whose vocabulary logits exist at once (bounds memory).")
    # -- critic ---------------------------------------------------------------------------
    critic_warmup_steps: int = option(0, "First PPO batches in which only the critic learns.")
    # -- placement ------------------------------------------------------------------------
    device: str = option("auto", DEVICE_HELP)
    dtype: DtypeName = option("auto", DTYPE_HELP)
    gradient_checkpointing: bool | None = option(
        None, "Recompute activations in backward (less memory, ~30% slower). Default: on with CUDA.")
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
        if not 0 <= self.max_capped_share <= 1:
            raise TrainingError("max_capped_share must be between 0 and 1")
        for name, allowed in (("advantage", Advantage), ("loss_type", LossType), ("scale_rewards", ScaleRewards),
                              ("on_stale", OnStale)):
            if getattr(self, name) not in get_args(allowed):
                raise TrainingError(f"{name} must be one of {get_args(allowed)}, not {getattr(self, name)!r}")
        if self.advantage == "rloo" and self.reward_placement != "final":
            raise TrainingError("advantage=rloo takes one outcome reward per rollout: set reward_placement=final")
        if self.critic_free and self.critic_warmup_steps:
            raise TrainingError(f"advantage={self.advantage} has no critic: critic_warmup_steps must be 0")

    @property
    def critic_free(self) -> bool:
        """grpo/rloo: no critic adapter or value head; a question's rollouts are the baseline."""
        return self.advantage in CRITIC_FREE
