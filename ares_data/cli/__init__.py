"""`ares`: a thin Typer CLI over the ares_data library (and, lazily, ares_train).

Each area lives in its own module and registers its commands here. Heavy libraries
(datasets, torch, transformers) are imported inside commands, so `ares --help` stays fast.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from . import batch_cmds, eval_cmds, import_cmds, model_cmds, review_cmds, store_cmds, teacher_cmds, train_cmds
from ._common import AresGroup, State

app = typer.Typer(
    cls=AresGroup,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="ARES: improve a student's chain-of-thought with sentence-level teacher feedback, "
    "alternating PPO and SFT, with every teacher call kept in one SQL store.",
)


@app.callback()
def _root(
    ctx: typer.Context,
    db: Annotated[
        Optional[str],
        typer.Option(
            "--db",
            envvar="ARES_DB",
            help="Store: a SQLite file path (default ./ares.db) or an SQLAlchemy URL "
            "(sqlite:///..., postgresql://...).",
        ),
    ] = None,
) -> None:
    ctx.obj = State(db=db)


for area in (store_cmds, import_cmds, review_cmds, teacher_cmds, batch_cmds, train_cmds, model_cmds, eval_cmds):
    area.register(app)

# `ares --help` lists the commands in the order of the pipeline, one panel per stage.
PANELS = {
    "Store and audit": ("init", "status", "sql", "split"),
    "Data and curation": ("import", "review", "agreement"),
    "Teacher": ("collect-scores", "collect-corrections", "batch", "fake-teacher"),
    "Student": ("generate", "export", "train", "model"),
    "Evaluation": ("eval", "report"),
}
_PANEL_OF = {name: panel for panel, names in PANELS.items() for name in names}
for info in (*app.registered_commands, *app.registered_groups):
    name = info.name or info.callback.__name__.replace("_", "-")
    info.rich_help_panel = _PANEL_OF[name]


def main() -> None:
    app()
