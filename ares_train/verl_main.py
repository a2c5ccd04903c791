"""`python -m ares_train.verl_main`: verl 0.9.1's `main_ppo` with the offline PPO's method and ARES's checks.

What `run_verl.sh` runs. Before Hydra composes verl's own `ppo_trainer` config, the method of the
offline trainer (`PPOConfig`'s defaults: GAE's gamma and lambda, the KL coefficient, the policy and
value clips, LoRA on actor and critic, the reward's neutral point) goes in front of the
command line's overrides, so both engines train the same way unless an override says otherwise.
The composed config is then checked (`verl_agent.check_config`: the v1 trainer and the
`ares_single_turn` agent loop, else the run stops in one line) and handed to verl's own `main`.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from ares_data.errors import AresError

from .ppo_config import PPOConfig


def _hydra_value(value: object) -> str:
    return f"[{','.join(map(str, value))}]" if isinstance(value, list) else str(value)


def method_overrides(config: PPOConfig) -> list[str]:
    """The offline PPO's method as verl overrides (verl's own names on the left)."""
    targets = _hydra_value(config.lora_target_modules)
    out = [
        f"algorithm.gamma={config.gamma}", f"algorithm.lam={config.lam}",
        f"algorithm.kl_ctrl.kl_coef={config.kl_coef}", f"actor_rollout_ref.actor.kl_loss_coef={config.kl_coef}",
        *(f"actor_rollout_ref.actor.{key}={config.clip_range}" for key in
          ("clip_ratio", "clip_ratio_low", "clip_ratio_high")),
        f"critic.cliprange_value={config.value_clip_range}",
        f"++reward.reward_kwargs.ares.neutral={config.neutral_score}",
    ]
    for model in ("actor_rollout_ref.model", "critic.model"):
        out += [f"{model}.lora_rank={config.lora_r}", f"{model}.lora_alpha={config.lora_alpha}",
                f"{model}.target_modules={targets}"]
    return out


@hydra.main(config_path="pkg://verl.trainer.config", config_name="ppo_trainer", version_base=None)
def main(config: DictConfig) -> None:
    """Check the composed config, then run verl's own main_ppo on it."""
    from verl.trainer import main_ppo

    from .verl_agent import check_config

    try:
        check_config(config)
    except AresError as exc:  # SystemExit passes Hydra's error report: one line, exit status 1
        raise SystemExit(f"run_verl.sh: {exc}") from None
    main_ppo.main.__wrapped__(config)


if __name__ == "__main__":
    sys.argv[1:1] = method_overrides(PPOConfig())
    main()
