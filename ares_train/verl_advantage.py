"""The critic-free sentence-reward GRPO advantage as a verl advantage estimator, `ares_sentence_grpo`.

The same function as the offline trainer computes it (`ares_train.ppo_math.sentence_grpo_advantages`),
registered with verl's `register_adv_est` so `run_verl.sh algorithm.adv_estimator=ares_sentence_grpo`
trains with it. verl's `compute_advantage` hands a registered estimator the dense
`token_level_rewards` (the agent loop's `rm_scores` after the KL penalty), the `response_mask` and
the prompt's `uid` as `index`. Registration has to happen in the process that computes advantages
(verl's TaskRunner), which imports `ares_train.verl_reward` (the reward manager's module) when it
starts the reward workers; that import registers it.
"""

from __future__ import annotations

from typing import Any

ESTIMATOR = "ares_sentence_grpo"


def register_sentence_grpo() -> None:
    """Register `ares_sentence_grpo` with verl. verl's `algorithm.norm_adv_by_std_in_grpo=false`
    (Dr. GRPO) maps to `scale_rewards="none"`. A sentence scored exactly neutral has reward 0 and
    so is not counted as a step here (verl passes no step mask); the offline trainer counts it."""
    from verl.trainer.ppo import core_algos

    from .ppo_math import sentence_grpo_advantages

    def ares_sentence_grpo(token_level_rewards: Any, response_mask: Any, index: Any = None, config: Any = None,
                           **_: Any) -> tuple[Any, Any]:
        by_std = True if config is None else config.get("norm_adv_by_std_in_grpo", True)
        return sentence_grpo_advantages(token_level_rewards, response_mask, index,
                                        scale_rewards="group" if by_std else "none")

    core_algos.ADV_ESTIMATOR_REGISTRY.pop(ESTIMATOR, None)  # a re-import registers the same name again
    core_algos.register_adv_est(ESTIMATOR)(ares_sentence_grpo)
