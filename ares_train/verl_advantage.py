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


def register_sentence_grpo() -> bool:
    """Register `ares_sentence_grpo` with verl; False while `ares_train.ppo_math` has no
    `sentence_grpo_advantages` (the RL-algorithms branch adds it)."""
    from verl.trainer.ppo import core_algos

    from . import ppo_math

    advantages_of = getattr(ppo_math, "sentence_grpo_advantages", None)
    if advantages_of is None:
        return False

    def ares_sentence_grpo(token_level_rewards: Any, response_mask: Any, index: Any = None, config: Any = None,
                           **_: Any) -> tuple[Any, Any]:
        advantages = advantages_of(token_level_rewards, response_mask, index)
        return advantages, advantages  # verl's critic-free estimators return the advantages as the returns

    core_algos.ADV_ESTIMATOR_REGISTRY.pop(ESTIMATOR, None)  # a re-import registers the same name again
    core_algos.register_adv_est(ESTIMATOR)(ares_sentence_grpo)
    return True
