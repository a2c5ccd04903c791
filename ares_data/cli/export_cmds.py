"""What the store writes out: training shards (`export rl|sft|verl|prm`) and the report (`report`).

Neither needs the training extra: shards are parquet written with `datasets`, the report's plots
use matplotlib.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ..review.policy import PRMFormat, ScorePolicy
from ..teacher.logprobs import Reward
from ._common import RoundReq, console, fail, reading_store, store

if TYPE_CHECKING:
    from ..tables import Export

OutOpt = Annotated[Optional[Path], typer.Option(
    "--out", help="Shard directory (default: $ARES_HOME/shards/<kind>-round-N).")]
TeacherOpt = Annotated[Optional[str], typer.Option(
    "--teacher", help="Use the scores of this teacher model when several scored the round.")]
ScoresOpt = Annotated[ScorePolicy, typer.Option(
    "--scores", help="Rewards: human label where there is one, else the teacher's (human-first); "
    "the teacher's only (teacher, with --teacher NAME when several); the mean of all teachers (mean).")]
RewardOpt = Annotated[Reward, typer.Option(
    "--reward", help="A teacher label's reward: the score it sampled, or its expected score under its token "
    "distribution (needs collect-scores --score-from logprobs; human labels stay as they are).")]


export_app = typer.Typer(no_args_is_help=True, help="Write training shards (parquet + manifest) from the store.")


def _print_export(row: "Export") -> None:
    skipped = ", ".join(f"{n} {reason}" for reason, n in sorted((row.skipped or {}).items())) or "none"
    console.print(f"export {row.id}: {row.row_count} {row.kind} rows to {row.path} (skipped: {skipped}; "
                  f"{row.content_hash})", highlight=False, soft_wrap=True)


@export_app.command("rl")
def export_rl_cmd(ctx: typer.Context, round: RoundReq, out: OutOpt = None, teacher: TeacherOpt = None,
                  scores: ScoresOpt = ScorePolicy.human_first, reward: RewardOpt = Reward.sampled) -> None:
    """One row per rollout scored sentence by sentence: prompt, response, spans, scores."""
    from ..exporters import export_rl

    _print_export(export_rl(store(ctx), round, out, teacher, scores, reward))


@export_app.command("sft")
def export_sft_cmd(ctx: typer.Context, round: RoundReq, out: OutOpt = None, teacher: TeacherOpt = None,
                   scores: ScoresOpt = ScorePolicy.human_first) -> None:
    """Prompt + corrected rationale (a reviewer's, else the teacher's) ending in the answer sentence."""
    from ..exporters import export_sft

    _print_export(export_sft(store(ctx), round, out, teacher, scores))


@export_app.command("verl")
def export_verl_cmd(ctx: typer.Context, round: RoundReq, out: OutOpt = None,
                    model: Annotated[Optional[str], typer.Option(
                        "--model", help="Student for verl: a Hugging Face model directory or hub name "
                                        "(default HuggingFaceTB/SmolLM2-135M-Instruct).")] = None) -> None:
    """Questions as verl's train/val parquet + run_verl.sh: PPO on a Ray cluster, rewarded online per sentence."""
    from ..verl_export import VERL_SCRIPT, export_verl

    row = export_verl(store(ctx), round, out, model)
    _print_export(row)
    console.print(f"run it: bash {row.path}/{VERL_SCRIPT} (docs/verl.md)", highlight=False, soft_wrap=True)


SourcesOpt = Annotated[str, typer.Option(
    "--sources", help="Rationales whose teacher scores are steps: gold, student, correction (comma-separated).")]
RoundsOpt = Annotated[Optional[str], typer.Option(
    "--rounds", help="Only student/correction rationales of these rounds (comma-separated; default all).")]
PRMTeacherOpt = Annotated[Optional[str], typer.Option(
    "--teacher", help="The teacher whose scores are the labels (needed when several scored).")]


def sources_rounds(sources: str, rounds: str | None) -> tuple[tuple[str, ...], list[int] | None]:
    """`--sources` and `--rounds` as a tuple of names and a list of round numbers (None: all)."""
    names = tuple(s.strip() for s in sources.split(",") if s.strip())
    try:
        numbers = [int(r) for r in rounds.split(",") if r.strip()] if rounds else None
    except ValueError:
        raise fail(f"--rounds takes round numbers separated by commas, not {rounds!r}") from None
    return names, numbers


@export_app.command("prm")
def export_prm_cmd(
    ctx: typer.Context,
    fmt: Annotated[PRMFormat, typer.Option(
        "--format", help="stepwise: TRL's stepwise supervision (prompt, completions, labels); math-shepherd: "
                         "steps tagged 'ки' in `input`, '+'/'-' in `label`.")] = PRMFormat.stepwise,
    threshold: Annotated[float, typer.Option(
        "--threshold", min=0.0, max=1.0, help="A step is good (True, '+') when its score is at least this.")] = 0.5,
    out: OutOpt = None,
    teacher: PRMTeacherOpt = None,
    sources: SourcesOpt = "gold,student",
    rounds: RoundsOpt = None,
) -> None:
    """Sentence scores as process-reward-model training data, one row per fully scored rationale."""
    from ..exporters import export_prm

    names, numbers = sources_rounds(sources, rounds)
    _print_export(export_prm(store(ctx), fmt, threshold, out, teacher, names, numbers))


def report(
    ctx: typer.Context,
    out: Annotated[Optional[Path], typer.Option("--out", help="Directory for report.md and the PNG plots "
                                                "(default: $ARES_HOME/report).")] = None,
) -> None:
    """Write a Markdown report with per-round plots and the tables behind them."""
    from ..paths import ares_home
    from ..report import write_report

    path = write_report(reading_store(ctx), out or ares_home() / "report")
    console.print(f"report written to {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(export_app, name="export")
    app.command()(report)
