"""Evaluation: `ares eval accuracy|winrate`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from ares_data.cli._common import JsonOpt, LimitOpt, console, err_console, store
from ares_data.cli.store_cmds import SqlFormat, print_rows, print_tables
from ares_data.cli.teacher_options import teacher_options
from ares_data.extras import require
from ares_train.placement import RunsOn

from .config_flags import config_flags

if TYPE_CHECKING:
    from ares_data.teacher.config import TeacherConfig

eval_app = typer.Typer(no_args_is_help=True, callback=lambda: require("train"),
                        help="Evaluate checkpoints: answer accuracy, teacher-judged win rate.")

CheckpointArg = Annotated[str, typer.Option("--checkpoint", help="Checkpoint name, or 'latest' (newest registered).")]
SplitOpt = Annotated[str, typer.Option("--split", help="Question split to evaluate on.")]
MaxNewTokensOpt = Annotated[int, typer.Option("--max-new-tokens", min=1, help="Generation length cap.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Questions per generate() call.")]


@eval_app.command("accuracy")
@config_flags(RunsOn, into="runs_on")
def accuracy(
    ctx: typer.Context,
    checkpoint: CheckpointArg = "latest",
    split: SplitOpt = "test",
    limit: LimitOpt = None,
    max_new_tokens: MaxNewTokensOpt = 256,
    batch_size: BatchOpt = 8,
    as_json: JsonOpt = False,
    *,
    runs_on: dict,
) -> None:
    """Greedy rationale + answer per question; accuracy overall and by subject and grade.

    Unparseable answers count as wrong and are counted in the 'unparsed' column.
    """
    from ares_data.evaluation import accuracy_tables
    from ares_train.evaluate import evaluate_accuracy
    from ares_train.placement import resolve

    opened = store(ctx)
    row, counts = evaluate_accuracy(opened, checkpoint, split=split, limit=limit, max_new_tokens=max_new_tokens,
                                    batch_size=batch_size, placement=resolve(**runs_on))
    (err_console if as_json else console).print(
        f"checkpoint {row.name}: {counts['evaluated_now']} questions evaluated now, {counts['questions']} in all "
        f"({split})", highlight=False)
    print_tables({f"Accuracy ({title})": table for title, table in accuracy_tables(opened, row.id, split).items()},
                 as_json)


@eval_app.command("winrate")
@teacher_options
@config_flags(RunsOn, into="runs_on")
def winrate(
    ctx: typer.Context,
    a: Annotated[str, typer.Option("--a", help="Checkpoint whose win rate is reported (name or 'latest').")],
    b: Annotated[str, typer.Option("--b", help="Checkpoint it is compared with.")],
    split: SplitOpt = "test",
    limit: LimitOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the A/B order drawn per question.")] = 0,
    max_new_tokens: MaxNewTokensOpt = 256,
    batch_size: BatchOpt = 8,
    as_json: JsonOpt = False,
    *,
    runs_on: dict,
    teacher: "TeacherConfig",
) -> None:
    """Teacher-judged pairwise comparison of two checkpoints' greedy rationales on the same questions.

    The order shown to the judge is drawn per question and stored (eval_result.a_position), so a
    judge's position bias cannot decide the result. Ties count as half a win.
    """
    import asyncio

    from ares_data.evaluation import judge_winrate
    from ares_train.evaluate import ensure_eval_rationales, eval_questions
    from ares_train.loading import find_checkpoint
    from ares_train.placement import resolve

    opened = store(ctx)
    first, second = find_checkpoint(opened, a), find_checkpoint(opened, b)
    questions = eval_questions(opened, split, limit)
    kwargs = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, placement=resolve(**runs_on))
    ra = ensure_eval_rationales(opened, first, questions, **kwargs)
    rb = ensure_eval_rationales(opened, second, questions, **kwargs)
    result, failed = asyncio.run(judge_winrate(opened, teacher, first, second, questions, ra, rb, split=split,
                                               seed=seed))
    print_rows(["a", "b", "questions", "wins", "ties", "losses", "win_rate", "95% CI", "judge failed"],
               [(first.name, second.name, result.n, result.wins, result.ties, result.losses, f"{result.rate:.3f}",
                 f"[{result.low:.3f}, {result.high:.3f}]", failed)],
               SqlFormat.json if as_json else SqlFormat.table, title="Win rate of A against B")


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")
