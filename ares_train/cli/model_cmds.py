"""`ares model`: work with student/teacher model files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ares_data.cli._common import console
from ares_data.cli.teacher_options import check_student
from ares_data.extras import require

model_app = typer.Typer(no_args_is_help=True, callback=lambda: require("train"),
                         help="Prepare model files (e.g. the embedded SmolLM2).")


@model_app.command("materialize")
def materialize(
    model: Annotated[str, typer.Argument(help="'smollm2', a .gguf file, or a model directory.")],
    out: Annotated[Path, typer.Option("--out", help="Directory to write (kept if already complete).")],
) -> None:
    """Write a GGUF model as a Hugging Face directory: loads faster, and `transformers serve` can serve it."""
    from ares_train.materialize import materialize as run

    check_student(model, "MODEL")
    console.print(f"model directory: {run(model, out.expanduser().resolve())}")


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")
