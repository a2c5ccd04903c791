"""`ares`: a thin Typer CLI over the ares_data library, extended by plugins.

Each area lives in its own module and registers its commands here. The training, evaluation
and model commands come from `ares_train.cli` through the `ares.cli` entry point group (a
`register(app)` hook, as llm's `register_commands`): `ares_data` never imports `ares_train`.
Heavy libraries (datasets, torch, transformers) are imported inside commands, so `ares --help`
stays fast.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Annotated, Callable, Optional, Union

import typer

from ..extras import install_command
from . import batch_cmds, export_cmds, import_cmds, review_cmds, store_cmds, teacher_cmds
from ._common import AresGroup, State, fail

PLUGIN_GROUP = "ares.cli"
# Commands that a plugin registers, and the extra that installs it.
PLUGIN_COMMANDS = {"generate": "train", "train": "train", "model": "train", "eval": "train"}

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


CommandOrGroup = Union[typer.models.CommandInfo, typer.models.TyperInfo]


def _name(info: CommandOrGroup) -> str:
    return info.name or info.callback.__name__.replace("_", "-")


def _not_installed(name: str, extra: str) -> Callable[[], None]:
    def command() -> None:
        raise fail(f"`ares {name}` comes with the '{extra}' extra: {install_command(extra)}")

    command.__doc__ = f"(needs the '{extra}' extra: {install_command(extra)})"
    return command


def register_plugins(target: typer.Typer) -> None:
    """Every `ares.cli` entry point's `register(app)`; a plugin command that none registered answers with its extra."""
    for entry in entry_points(group=PLUGIN_GROUP):
        entry.load()(target)
    have = {_name(info) for info in (*target.registered_commands, *target.registered_groups)}
    for name, extra in PLUGIN_COMMANDS.items():
        if name not in have:
            target.command(name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
                           add_help_option=False)(_not_installed(name, extra))


for area in (store_cmds, import_cmds, review_cmds, teacher_cmds, batch_cmds, export_cmds):
    area.register(app)
register_plugins(app)

# `ares --help` lists the commands in the order of the pipeline, one panel per stage.
PANELS = {
    "Store and audit": ("init", "status", "sql", "split"),
    "Data and curation": ("import", "review", "agreement"),
    "Teacher": ("collect-scores", "collect-corrections", "batch", "fake-teacher"),
    "Student": ("generate", "export", "train", "model"),
    "Evaluation": ("eval", "report"),
}
_PANEL_OF = {name: panel for panel, names in PANELS.items() for name in names}
infos: list[CommandOrGroup] = [*app.registered_commands, *app.registered_groups]
for info in infos:
    info.rich_help_panel = _PANEL_OF[_name(info)]


def main() -> None:
    app()
