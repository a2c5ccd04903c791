"""Experiment tracking (`--report-to`) for the trainers that run their own loop (PPO, the PRM).

The SFT stage hands `report_to` to TRL's trainer, whose transformers callbacks do the logging;
this module gives the PPO and PRM loops the same behaviour under the same names and defaults, so a
TRL user finds every stage where they look: TensorBoard event files under
`<output>/runs/<time>_<host>` (or $TENSORBOARD_LOGGING_DIR), a wandb run in $WANDB_PROJECT (default
`huggingface`; WANDB_MODE=offline works), a trackio run in project `huggingface` (local, in
$TRACKIO_DIR, unless trackio is told to sync). Each step's metrics keep the names stored in
`training_run.metrics`, prefixed `train/` as transformers' `rewrite_logs` does. The store stays
the source of truth: a tracker only gets a copy.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping, get_args

from ares_data.errors import MissingExtra, TrainingError
from ares_data.extras import install_command

ReportTo = Literal["none", "tensorboard", "wandb", "trackio"]
REPORT_TO_HELP = "Also log each step's metrics to this tracker (TRL's report_to); the store keeps them anyway."
PROJECT = "huggingface"  # transformers' default project name for wandb and trackio
_MODULE = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}
StepLog = Callable[[Mapping[str, Any]], None]


def check_report_to(report_to: str) -> None:
    """A known tracker whose library is installed; else one line saying what to do."""
    if report_to not in get_args(ReportTo):
        raise TrainingError(f"report_to {report_to!r}: expected one of {', '.join(get_args(ReportTo))}")
    module = _MODULE.get(report_to)
    if module is not None and find_spec(module) is None:
        raise MissingExtra(f"--report-to {report_to} needs {module}, which is not installed: "
                           f"{install_command('tracking')}")


def scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a step's metrics under transformers' names (`train/<name>`); the step itself is the x axis."""
    from transformers.integrations.integration_utils import rewrite_logs

    numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and k != "step"}
    return rewrite_logs(numbers)


@contextmanager
def step_logger(report_to: str, *, run_name: str, output_dir: Path, config: Mapping[str, Any]) -> Iterator[StepLog]:
    """A callback that sends one step's metrics (with their `step`) to the tracker, closed on exit."""
    check_report_to(report_to)
    if report_to == "none":
        yield lambda metrics: None
        return
    if report_to == "tensorboard":
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations.integration_utils import default_logdir

        writer = SummaryWriter(log_dir=os.getenv("TENSORBOARD_LOGGING_DIR") or str(output_dir / default_logdir()))
        writer.add_text("config", repr(dict(config)))

        def log(metrics: Mapping[str, Any]) -> None:
            for name, value in scalars(metrics).items():
                writer.add_scalar(name, value, metrics["step"])
            writer.flush()

        try:
            yield log
        finally:
            writer.close()
        return
    if report_to == "wandb":
        import wandb

        run = wandb.init(project=os.getenv("WANDB_PROJECT", PROJECT), name=run_name, config=dict(config))
        try:
            yield lambda metrics: run.log(scalars(metrics), step=metrics["step"])
        finally:
            run.finish()
        return
    import trackio

    trackio.init(project=PROJECT, name=run_name, config=dict(config))
    try:
        yield lambda metrics: trackio.log(scalars(metrics), step=metrics["step"])
    finally:
        trackio.finish()
