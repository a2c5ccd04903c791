"""Curation commands: `review` (terminal UI), `review export|import` (Label Studio), `agreement`.

Textual is imported inside `review`, so `ares --help` stays fast.
"""

from __future__ import annotations

import getpass
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ._common import JsonOpt, RoundOpt, console, store
from .store_cmds import SqlFormat, print_rows

WhereOpt = Annotated[Optional[str], typer.Option(
    "--filter", help="SQL condition over r (rationale) and q (question), e.g. \"q.split = 'train'\".")]
ReviewerOpt = Annotated[str, typer.Option(
    "--reviewer", envvar="ARES_REVIEWER", help="Name stored with every label (default: your login).")]


class ExportFormat(str, Enum):
    label_studio = "label-studio"


review_app = typer.Typer(invoke_without_command=True,
                         help="Review teacher feedback: a terminal UI, or a Label Studio round trip.")


@review_app.callback()
def review(
    ctx: typer.Context,
    round: RoundOpt = None,
    where: WhereOpt = None,
    reviewer: ReviewerOpt = "",
) -> None:
    """Walk the round's rationales one at a time: accept or change sentence scores, edit the
    correction, flag a bad question. Every change is a new human label row."""
    if ctx.invoked_subcommand is not None:
        return
    from ..review.tui import ReviewApp

    ReviewApp(store(ctx), round=round, where=where, reviewer=reviewer or getpass.getuser()).run()


@review_app.command("export")
def export_cmd(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", dir_okay=False, help="JSON file of Label Studio tasks to write.")],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="Annotation tool.")] = ExportFormat.label_studio,
    round: RoundOpt = None,
    where: WhereOpt = None,
) -> None:
    """Label Studio tasks, each teacher's scores as predictions (model_version: the teacher); config in FILE.xml."""
    from ..review.label_studio import export_tasks

    count = export_tasks(store(ctx), out, round=round, where=where)
    console.print(f"{count} tasks to {out} (labelling config: {out.with_suffix('.xml')})", highlight=False)


@review_app.command("import")
def import_cmd(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Label Studio's JSON export.")],
) -> None:
    """Read annotated tasks back as human labels; importing a file twice adds nothing."""
    from ..review.label_studio import import_annotations

    added = import_annotations(store(ctx), file)
    console.print(", ".join(f"{n} {kind} labels" for kind, n in sorted(added.items())) + f" added from {file}",
                  highlight=False)


def agreement(ctx: typer.Context, round: RoundOpt = None, as_json: JsonOpt = False) -> None:
    """Per pair of labellers (teachers, human): shared sentences, Spearman, Pearson, mean absolute
    difference, exact agreement on the 0.1 grid. Without --round, all rounds pooled. A PRM
    (`ares train prm`, scored with `--provider prm`) is also shown against the teacher it learned from."""
    from ..review.agreement import COLUMNS, agreement as compute, prm_against_teacher, prm_teachers

    opened = store(ctx)
    rows = compute(opened, round)
    print_rows(list(COLUMNS), [[round_float(r[c]) for c in COLUMNS] for r in rows],
               SqlFormat.json if as_json else SqlFormat.table,
               title=f"agreement, round {round}" if round is not None else "agreement, all rounds")
    distilled = prm_against_teacher(rows, prm_teachers(opened))
    if distilled:
        print_rows(["prm", "teacher", *COLUMNS[2:]], [[round_float(r[c]) for c in COLUMNS] for r in distilled],
                   title="each PRM against the teacher it learned from")


def round_float(value: object) -> object:
    return round(value, 3) if isinstance(value, float) else value


def register(app: typer.Typer) -> None:
    app.add_typer(review_app, name="review")
    app.command()(agreement)
