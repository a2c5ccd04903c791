"""What the PPO trainer tests share: a fast configuration on the toy task and a trainer over a fresh toy model."""

from __future__ import annotations

from ares_train import ppo_toy
from ares_train.ppo_config import PPOConfig
from ares_train.ppo_trainer import SentenceRewardPPOTrainer

FAST = dict(learning_rate=5e-3, batch_size=16, mini_batch_size=8, lora_dropout=0.0, seed=0)


def make_trainer(tokenizer, **overrides) -> SentenceRewardPPOTrainer:
    return SentenceRewardPPOTrainer(PPOConfig(**{**FAST, **overrides}), ppo_toy.toy_model(tokenizer), tokenizer)
