"""Curation commands: `review` (terminal UI), `review export|import` (Label Studio), `agreement`.

Textual is imported inside `review`, so `ares --help` stays fast.
"""

from __future__ import annotations

import getpass
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ._common import JsonOpt, RoundOpt, console, fail, store
from .store_cmds import SqlFormat, print_rows

WhereOpt = Annotated[Optional[str], typer.Option(
    "--filter", help="SQL condition over r (rationale) and q (question), e.g. \"q.split = 'train'\".")]
ReviewerOpt = Annotated[str, typer.Option(
    "--reviewer", envvar="ARES_REVIEWER", help="Name stored with every label (default: your login).")]


class ExportFormat(str, Enum):
    label_studio = "label-studio"


REVIEW_HELP = (
    "Review teacher feedback. Bare, `ares review` opens a full-screen UI (it needs a terminal) on the "
    "round's rationales, one at a time; every change is a new human label row.\n\n"
    "Keys: up/down pick a sentence; 0-9 score it 0.0-0.9, t 1.0; a accept the score shown; e edit the "
    "correction (ctrl+s save, escape cancel); f flag the question; n/p next/previous rationale; q quit.\n\n"
    "Without a terminal: `ares review export` and `ares review import` (a Label Studio round trip).")
review_app = typer.Typer(invoke_without_command=True, help=REVIEW_HELP)


@review_app.callback()
def review(
    ctx: typer.Context,
    round: RoundOpt = None,
    where: WhereOpt = None,
    reviewer: ReviewerOpt = "",
) -> None:
    """The terminal UI (REVIEW_HELP); refused at once without a terminal, which it would draw into a file."""
    if ctx.invoked_subcommand is not None:
        return
    from ..review.tui import ReviewApp  # first: a missing 'review' extra is said before anything else

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise fail("`ares review` opens a full-screen UI and needs a terminal (stdin and stdout); "
                   "without one, `ares review export --out tasks.json` writes the same rationales for Label Studio")

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
    (`ares train prm`, scored with `--provider prm`) is also shown against the teacher it learned from.
    Without two labellers on shared sentences: one line saying what is missing, exit 1 (also with --json)."""
    from ..review.agreement import COLUMNS, agreement as compute, prm_against_teacher, prm_teachers, why_empty

    opened = store(ctx)
    rows = compute(opened, round)
    if not rows:
        raise fail(why_empty(opened, round))
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
