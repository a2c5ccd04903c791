"""What a training stage prints while it runs, as TRL users know it.

- `step_reporter`: a rich progress bar on stderr whose line shows the last step's headline
  metrics (PPO: reward, KL, loss; SFT and PRM: loss), fed by the trainer's per-step callback,
  which also sends the step to the `--report-to` tracker (`tracking.py`).
- `sft_progress`: the same bar for TRL's SFT trainer, as a transformers `TrainerCallback`.
- `headline`: the short end-of-run summary the CLI prints (the full per-step table is for
  `--json`/`--verbose`).
- `library_output`: other libraries' progress bars (weights loading, GGUF conversion, datasets'
  map and parquet bars) and their known-harmless warnings kept quiet unless `--verbose`.
"""

from __future__ import annotations

import functools
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .tracking import StepLog, step_logger

# (metric as stored, label shown) of each stage's bar and summary, as TRL's trainers headline them.
RL_HEADLINE = (("mean_reward", "reward"), ("kl", "kl"), ("policy_loss", "loss"))
LOSS_HEADLINE = (("loss", "loss"),)
# Warnings of other libraries that say nothing about the user's run: (category, message regex).
KNOWN_WARNINGS = (
    # PEFT asks transformers 5 whether checkpointing is on by its pre-5.11 name.
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
    # PEFT saving an adapter of a GGUF student (SmolLM2): its directory has no config.json to compare vocabularies.
    (UserWarning, r"Could not find a config file in .* - will assume that the vocabulary was not modified"),
)


def headline(steps: Sequence[Mapping[str, Any]], shown: Sequence[tuple[str, str]]) -> str:
    """`reward 0.41 kl 1.2e-05 loss -0.003`: each headline metric's mean over the steps that have it."""
    parts = []
    for key, label in shown:
        values = [float(s[key]) for s in steps if isinstance(s.get(key), (int, float))]
        if values:
            parts.append(f"{label} {sum(values) / len(values):.3g}")
    return " ".join(parts)


def _bar(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[metrics]}"), console=Console(stderr=True),
                    disable=not enabled)


@contextmanager
def step_reporter(description: str, total: int | None, shown: Sequence[tuple[str, str]], *, report_to: str,
                  output_dir: Path, config: Mapping[str, Any], enabled: bool = True) -> Iterator[StepLog]:
    """The per-step callback of a trainer's own loop: advances the bar (headline metrics of the
    step) and logs the step to the `report_to` tracker."""
    with step_logger(report_to, run_name=output_dir.name, output_dir=output_dir, config=config) as log, \
            _bar(enabled) as bar:
        task = bar.add_task(description, total=total, metrics="")

        def on_step(metrics: Mapping[str, Any]) -> None:
            log(metrics)
            bar.update(task, advance=1, metrics=headline([metrics], shown))

        yield on_step
        done = bar.tasks[0].completed
        bar.update(task, total=done)  # the last batch may hold only dropped rows


def sft_progress(enabled: bool = True) -> Any:
    """A transformers `TrainerCallback` drawing the SFT run's bar (step of max_steps, loss)."""
    from transformers import TrainerCallback

    class SFTProgress(TrainerCallback):
        def __init__(self) -> None:
            self.bar = _bar(enabled)
            self.task: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.bar.start()
            self.task = self.bar.add_task("SFT", total=state.max_steps, metrics="")

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.bar.update(self.task, completed=state.global_step)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if logs and "loss" in logs:
                self.bar.update(self.task, metrics=headline([logs], LOSS_HEADLINE))

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.bar.stop()

    return SFTProgress()


@contextmanager
def library_output(verbose: bool) -> Iterator[None]:
    """Other libraries' progress bars and KNOWN_WARNINGS off for the block, unless `verbose`."""
    if verbose:
        yield
        return
    import datasets.utils
    import transformers.modeling_gguf_pytorch_utils as gguf_loading
    from transformers.utils import logging as transformers_logging

    bars_were_on = transformers_logging.is_progress_bar_enabled(), not datasets.utils.are_progress_bars_disabled()
    transformers_logging.disable_progress_bar()  # weights loading; also huggingface_hub's bars
    datasets.utils.disable_progress_bars()  # map, filter, parquet, "Generating train split"
    gguf_tqdm = gguf_loading.tqdm  # the GGUF conversion bar is plain tqdm, outside both switches
    gguf_loading.tqdm = functools.partial(gguf_tqdm, disable=True)
    try:
        with warnings.catch_warnings():
            for category, message in KNOWN_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=category)
            yield
    finally:
        gguf_loading.tqdm = gguf_tqdm
        if bars_were_on[0]:
            transformers_logging.enable_progress_bar()
        if bars_were_on[1]:
            datasets.utils.enable_progress_bars()
