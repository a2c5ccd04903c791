"""The optional parts of the toolkit and the extra that installs each, for a one-line hint.

A command imports its heavy libraries inside its body. `require` checks an extra up front (the
plugin commands of `ares_train` call it first); `missing_extra` turns a `ModuleNotFoundError`
that slipped through into the same hint, so the CLI never shows a traceback for a missing extra.
"""

from __future__ import annotations

from importlib.util import find_spec
from typing import Optional

from .errors import MissingExtra

# Each extra of pyproject.toml and the top-level modules that tell whether it is installed.
EXTRAS = {
    "train": ("torch", "transformers", "trl", "peft", "accelerate", "gguf", "sentencepiece", "PIL"),
    "review": ("textual",),
    "fake-teacher": ("starlette", "uvicorn", "multipart"),
    "postgres": ("psycopg",),
    "tracking": ("tensorboard", "wandb", "trackio"),
}
EXTRA_OF_MODULE = {module: extra for extra, modules in EXTRAS.items() for module in modules}


def install_command(extra: str) -> str:
    return f"pip install 'ares-toolkit[{extra}]'"


def _hint(extra: str, module: str) -> MissingExtra:
    return MissingExtra(f"this needs the '{extra}' extra ({module} is not installed): {install_command(extra)}")


def require(extra: str) -> None:
    """Raise MissingExtra naming the first module of `extra` that is not installed."""
    for module in EXTRAS[extra]:
        if find_spec(module) is None:
            raise _hint(extra, module)


def missing_extra(exc: ModuleNotFoundError) -> Optional[MissingExtra]:
    """The hint for a library of an extra that is not installed; None for any other missing module."""
    module = (exc.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(module)
    return None if extra is None else _hint(extra, module)
