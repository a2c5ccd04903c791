"""Credit assignment: sentence rewards vs one reward at the end, on the PPO toy task.

The same tiny model and task (`ares_train.ppo_toy`) is trained online (generate -> score ->
PPO step) in each arm of `ARMS`: `sentence` (PPO with a critic, `reward_placement="sentence"`),
`final` (the mean of the sentence scores on the last token), `sentence_warmup` (`sentence` with
the critic trained alone for the first 2 batches) and `grpo` (critic-free sentence GRPO, the 16
rollouts of a batch being one question's group). Printed: PPO updates each needs until the mean
sentence score, averaged over a window of steps, reaches the target (per seed, then the mean
and the ratio), and the wall time of one PPO update relative to one SFT step (a plain causal-LM
loss step with the same LoRA model) on the same batch.

    .venv/bin/python benchmarks/credit_assignment.py --seeds 3 --target 0.85
"""

from __future__ import annotations

import statistics
import time
from typing import Annotated

import torch
import typer
from rich.console import Console
from rich.table import Table

from ares_train import ppo_toy
from ares_train.ppo_config import PPOConfig
from ares_train.ppo_trainer import SentenceRewardPPOTrainer

console = Console()
BASE = dict(learning_rate=5e-3, batch_size=16, mini_batch_size=8, lora_dropout=0.0)
ARMS: dict[str, dict] = {"sentence": {}, "final": {"reward_placement": "final"},
                         "sentence_warmup": {"critic_warmup_steps": 2}, "grpo": {"advantage": "grpo"}}


def make_trainer(seed: int, arm: str) -> SentenceRewardPPOTrainer:
    tokenizer = ppo_toy.toy_tokenizer()
    config = PPOConfig(**BASE, seed=seed, **ARMS[arm])
    return SentenceRewardPPOTrainer(config, ppo_toy.toy_model(tokenizer, seed), tokenizer)


def updates_to_target(seed: int, arm: str, target: float, window: int, max_steps: int) -> int | None:
    """PPO batch updates until the windowed mean sentence score reaches `target` (None: never)."""
    scores: list[float] = []
    for metrics in ppo_toy.online(make_trainer(seed, arm), max_steps):
        scores.append(metrics["mean_score"])
        if len(scores) >= window and statistics.fmean(scores[-window:]) >= target:
            return len(scores)
    return None


def sft_step(trainer: SentenceRewardPPOTrainer, rows: list[dict], optimizer: torch.optim.Optimizer) -> None:
    """One causal-LM loss step on prompt + response with the trainer's LoRA policy."""
    tok = trainer.tokenizer
    enc = tok([f"{r['prompt']} {r['response']}" for r in rows], return_tensors="pt", padding=True)
    labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
    optimizer.zero_grad()
    trainer.model(**enc, labels=labels).loss.backward()
    optimizer.step()


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(
    seeds: Annotated[int, typer.Option(help="Seeds per arm.")] = 3,
    target: Annotated[float, typer.Option(help="Mean sentence score to reach.")] = 0.85,
    window: Annotated[int, typer.Option(help="Steps averaged when checking the target.")] = 3,
    max_steps: Annotated[int, typer.Option(help="Give up after this many PPO updates.")] = 80,
    repeats: Annotated[int, typer.Option(help="Timed repeats for the cost comparison.")] = 5,
    arms: Annotated[str, typer.Option(help=f"Comma-separated arms among {', '.join(ARMS)}.")] = ",".join(ARMS),
) -> None:
    torch.set_num_threads(1)
    table = Table(title=f"PPO updates to mean score {target}")
    table.add_column("seed")
    chosen = arms.split(",")
    if set(chosen) - set(ARMS):
        raise typer.BadParameter(f"--arms takes a subset of {','.join(ARMS)}")
    needed: dict[str, list[int | None]] = {arm: [] for arm in chosen}
    for arm in needed:
        table.add_column(arm, justify="right")
    for seed in range(seeds):
        for arm in needed:
            needed[arm].append(updates_to_target(seed, arm, target, window, max_steps))
        table.add_row(str(seed), *(str(needed[p][-1] or f">{max_steps}") for p in needed))
    # a run that never got there counts as max_steps: the ratio is then a lower bound
    means = {p: statistics.fmean(n or max_steps for n in v) for p, v in needed.items()}
    table.add_row("mean", *(f"{means[p]:.1f}" for p in needed))
    console.print(table)
    for arm in [a for a in needed if a != "sentence" and "sentence" in needed]:
        console.print(f"{arm} / sentence updates: {means[arm] / means['sentence']:.2f}x")

    trainer = make_trainer(0, "sentence")
    rows = ppo_toy.rollouts(trainer, trainer.config.batch_size)
    ppo = median_time(lambda: trainer.step(rows), repeats)
    sft_optimizer = torch.optim.AdamW(trainer.policy_params, lr=trainer.config.learning_rate)
    sft = median_time(lambda: sft_step(trainer, rows, sft_optimizer), repeats)
    cfg = trainer.config
    grad_updates = cfg.ppo_epochs * -(-cfg.batch_size // cfg.mini_batch_size)
    console.print(
        f"cost on one batch of {cfg.batch_size}: PPO update {ppo * 1000:.0f} ms "
        f"({cfg.ppo_epochs} epochs, {grad_updates} gradient steps), SFT step {sft * 1000:.0f} ms: "
        f"{ppo / sft:.1f}x ({ppo / grad_updates / sft:.1f}x per gradient step)"
    )


if __name__ == "__main__":
    typer.run(main)
