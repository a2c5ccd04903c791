"""One source for each trainer option: a dataclass field whose metadata holds its help text.

The configs (`ppo_config.py`, `sft_config.py`, `prm_config.py`, `rollout_config.SamplingSettings`)
declare their fields with `option`; the CLI builds its flags and their help from those fields, so a
default or a help text is written once. A `# -- title ----` comment in a config's body opens a
section; `sections` reads them, and `--help` shows each section as its own panel.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from dataclasses import field
from pathlib import Path
from typing import Any

_SECTION = re.compile(r"^\s*# -- (.+?) -+\s*$")
_FIELD = re.compile(r"^\s*(\w+)\s*:")


def option(default: Any, help: str) -> Any:
    """A dataclass field with a default and its help text."""
    return field(default=default, metadata={"help": help})


def sections(cls: type) -> dict[str, str]:
    """Field name -> title of the `# -- title ---` comment above it in `cls`'s body ('' before any;
    {} when the source cannot be read). Reads the module's lines, not `inspect.getsource`, which
    parses and tokenises the whole module and cost `ares --help` ~60 ms."""
    try:
        lines = Path(inspect.getfile(cls)).read_text(encoding="utf-8").splitlines()
    except (OSError, TypeError):
        return {}
    header = re.compile(rf"^class {cls.__name__}\b")
    start = next((i for i, line in enumerate(lines) if header.match(line)), None)
    if start is None:
        return {}
    names, found, current = {f.name for f in dataclasses.fields(cls)}, {}, ""
    for line in lines[start + 1:]:
        if line[:1].strip() and not line.startswith("#"):  # back at column 0: the class body is over
            break
        if heading := _SECTION.match(line):
            current = heading.group(1)
        elif (name := _FIELD.match(line)) and name.group(1) in names:
            found.setdefault(name.group(1), current)
    return found
