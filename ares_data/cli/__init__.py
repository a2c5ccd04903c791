"""`ares`: a thin Typer CLI over the ares_data library (and, lazily, ares_train).

Each area lives in its own module and registers its commands here. Heavy libraries
(datasets, torch, transformers) are imported inside commands, so `ares --help` stays fast.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from . import eval_cmds, import_cmds, model_cmds, review_cmds, store_cmds, teacher_cmds, train_cmds
from . import batch_cmds
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


store_cmds.register(app)
import_cmds.register(app)
teacher_cmds.register(app)
train_cmds.register(app)
eval_cmds.register(app)
model_cmds.register(app)
review_cmds.register(app)
batch_cmds.register(app)


def main() -> None:
    app()
