"""`ares import ...`: load ScienceQA, A-OKVQA, a generic JSONL file, or the built-in examples."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Iterable, Optional

import typer

from ._common import console, err_console, store

import_app = typer.Typer(no_args_is_help=True)

InputFile = Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="The file to import.")]
ImagesOpt = Annotated[
    Optional[Path],
    typer.Option("--images", exists=True, file_okay=False, help="Image folder: found images are hashed."),
]
PROGRESS_FROM = 5  # batches: smaller imports finish before a bar would be worth drawing


def _progress(batches: Iterable, total: int) -> Iterable:
    """A rich progress bar on stderr for large files (never drawn when stderr is not a terminal)."""
    from rich.progress import track

    return track(batches, total=total, description="importing", console=err_console, transient=True,
                 disable=total < PROGRESS_FROM or not err_console.is_terminal)


def _report(result: object) -> None:
    """The one-line summary: "N new questions, M new gold rationales (K already present)"."""
    console.print(str(result), highlight=False)


@import_app.command("scienceqa")
def scienceqa(
    ctx: typer.Context,
    problems: InputFile,
    splits: Annotated[Path, typer.Option("--splits", exists=True, dir_okay=False, help="pid_splits.json.")],
    captions: Annotated[
        Optional[Path], typer.Option("--captions", exists=True, dir_okay=False, help="captions.json.")
    ] = None,
    images: ImagesOpt = None,
) -> None:
    """Official ScienceQA problems.json; lecture + solution become the gold rationale."""
    from ..importers import import_scienceqa

    _report(import_scienceqa(store(ctx), problems, splits, captions=captions, images_dir=images, progress=_progress))


@import_app.command("aokvqa")
def aokvqa(ctx: typer.Context, file: InputFile, images: ImagesOpt = None) -> None:
    """Official A-OKVQA aokvqa_v1p0_<split>.json; its 3 rationales per question become gold."""
    from ..importers import import_aokvqa

    _report(import_aokvqa(store(ctx), file, images_dir=images, progress=_progress))


@import_app.command("jsonl")
def jsonl(
    ctx: typer.Context,
    file: InputFile,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="Dataset name (default: the file stem).")] = None,
) -> None:
    """Your own questions, one JSON object per line (format: docs/sql.md)."""
    from ..importers import import_jsonl

    _report(import_jsonl(store(ctx), file, dataset=dataset, progress=_progress))


@import_app.command("example")
def example(ctx: typer.Context) -> None:
    """The project's own 24-question science example set (what `make demo` uses)."""
    from ..importers import import_example

    _report(import_example(store(ctx)))


@import_app.command("synthetic-shapes")
def synthetic_shapes(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", file_okay=False, help="Folder for shapes.jsonl and images/.")],
    n: Annotated[int, typer.Option("--n", min=1, help="Questions to draw.")] = 24,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the shapes and colours.")] = 0,
) -> None:
    """Draw the project's multimodal example set (coloured shapes, needs pillow) and import it."""
    from ..synthetic_shapes import import_shapes

    _report(import_shapes(store(ctx), out, n, seed=seed))


def register(app: typer.Typer) -> None:
    app.add_typer(import_app, name="import", help="Load questions and gold rationales into the store.")
