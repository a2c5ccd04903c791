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
    max_grad_norm: float = option(1.0, "Gradient norm clip, applied to the policy's and the critic's parameters "
                                       "separately (a large critic gradient does not shrink the policy's step).")
    weight_decay: float = option(0.0, "AdamW weight decay (0: LoRA weights are not pulled towards zero).")
    seed: int = option(42, "Seed for torch (adapter init, mini-batch order).")
    # -- advantage estimator --------------------------------------------------------------
    advantage: Advantage = option(
        "gae", "`gae`: PPO with a critic (a second LoRA adapter and a value head). `grpo`: critic-free, a "
               "question's k rollouts are the baseline (DeepSeekMath 4.1.3 process supervision: each sentence "
               "reward normalised by the mean/std of all sentence rewards of the question's rollouts, a token's "
               "advantage the sum of those at or after it; outcome GRPO with reward_placement=final). `rloo`: "
               "critic-free, leave-one-out baseline over the k rollouts (needs reward_placement=final). grpo/rloo "
               "train a question's rollouts in one batch and need k >= 2.")
    loss_type: LossType = option(
        "bnpo", "Policy-loss aggregation, TRL's GRPO names: `bnpo` averages over the mini-batch's tokens (TRL's "
                "default `dapo` is the same here: a mini-batch is one optimiser step); `grpo` averages each "
                "response over its tokens, then over responses (longer responses weigh less per token).")
    scale_rewards: ScaleRewards = option(
        "group", "grpo only, TRL's semantics: divide the centred rewards by the std of their question's group "
                 "(`group`), of the whole batch (`batch`), or not at all (`none`, Dr. GRPO).")
    # -- PPO objective --------------------------------------------------------------------
    clip_range: float = option(0.2, "Policy ratio clip epsilon.")
    value_clip_range: float = option(0.2, "How far a new value may move from the old one before clipping.")
    vf_coef: float = option(0.1, "Weight of the value loss against the policy loss.")
    gamma: float = option(1.0, "Discount over response tokens.")
    lam: float = option(0.95, "GAE lambda.")
    whiten_advantages: bool = option(True, "Normalise advantages over the batch's response tokens (gae only: "
                                           "grpo/rloo advantages are already relative to the question's group).")
    behaviour_is_cap: float = option(
        2.0, "Cap of each token's loss weight min(p_policy / p_sampler, cap): later batches of a round were "
             "sampled by an older policy (truncated importance sampling, verl's rollout_is); 0: off.")
    max_capped_share: float = option(
        0.2, "Staleness bound: when more than this share of a batch's tokens hit behaviour_is_cap, the batch "
             "was drawn by a policy too far from the one trained (see on_stale). 1: never.")
    on_stale: OnStale = option(
        "warn", "Past max_capped_share: `warn` (logged, and `stale` in the step's metrics) or `stop` (train no "
                "further batches this run; what was trained is saved, `stopped_stale` in the summary).")
    # -- rewards --------------------------------------------------------------------------
    kl_coef: float = option(1e-4, "KL to the reference. gae: per-token reward penalty on log p_policy - log "
                                  "p_reference; grpo/rloo: weight of the k3 KL term in the loss (DeepSeekMath's beta).")
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
    gradient_checkpointing: bool | None = option(
        None, "Recompute activations in the backward pass (less memory, ~30% slower); works with the LoRA "
              "adapters. Default: on when the device is CUDA, off otherwise.")
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
