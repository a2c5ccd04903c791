"""`ares batch status|ingest`: follow the OpenAI batches that `collect-scores --batch` submitted."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..teacher.config import TeacherConfig
from ._common import JsonOpt, print_summary, store
from .store_cmds import SqlFormat, print_rows
from .teacher_options import teacher_options

ModelOpt = Annotated[Optional[str], typer.Option(
    "--model", help="Only this teacher model's batches (default: every batch in the store, whatever its model).")]

app = typer.Typer(no_args_is_help=True, help="Follow and ingest OpenAI Batch API jobs (collect-… --batch).")


@app.command()
@teacher_options
def status(ctx: typer.Context, model: ModelOpt = None, as_json: JsonOpt = False, *, teacher: TeacherConfig) -> None:
    """Show the store's batches, the ones not ingested yet brought up to date from the API."""
    import asyncio

    from ..teacher import batch

    header, rows = batch.batch_rows(asyncio.run(batch.status(store(ctx), teacher, model=model)))
    print_rows(header, rows, SqlFormat.json if as_json else SqlFormat.table,
               title=f"batches of {model}" if model else "batches")


@app.command()
@teacher_options
def ingest(ctx: typer.Context, model: ModelOpt = None, as_json: JsonOpt = False, *, teacher: TeacherConfig) -> None:
    """Store the answers of every ended batch (validated and audited as online answers); once per batch."""
    import asyncio

    from ..teacher import batch

    print_summary(asyncio.run(batch.ingest(store(ctx), teacher, model=model)), as_json)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="batch")
