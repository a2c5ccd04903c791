"""The commands that need the `train` extra, registered into `ares` from outside `ares_data`.

`ares_data.cli` calls `register(app)` for every entry point of the `ares.cli` group (declared in
pyproject.toml, as llm's `register_commands` hook), so `ares_data` never imports `ares_train`.
These modules import only typer and `ares_data`; torch, transformers and TRL are imported inside
the commands, and without them the CLI says in one line which extra to install.
"""

from __future__ import annotations

import typer

from . import eval_cmds, model_cmds, train_cmds


def register(app: typer.Typer) -> None:
    for area in (train_cmds, model_cmds, eval_cmds):
        area.register(app)
