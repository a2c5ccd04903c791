"""Trainer flags generated from the config dataclasses: one source for each option.

`@config_flags(PPOConfig)` gives a command one `--field-name` flag per field, with the field's
help text and default (`options.option`), and hands the command the flags that were given as one
dict of overrides. A default or a help text changes in the dataclass only; the command line,
the config file's `rl`/`sft` sections and the stored run config all follow it.

Help is laid out to be read in one screen: one panel per section of the dataclass
(`options.sections`), and a bool field is one switch that flips its default (`--x` when off by
default, `--no-x` when on), so no column of `--no-...` names takes half the width; a bool whose
default is None (decided at run time) takes `on` or `off`.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import types
import typing
from typing import Annotated, Any, Callable, Iterable, Literal, Optional, Union

import typer

from ares_train.options import sections

_SCALARS = (bool, int, float, str)
_ON_OFF = enum.Enum("OnOff", {"on": "on", "off": "off"}, type=str)


def _flag_type(hint: Any) -> Any:
    """The flag's Python type for a field's type: a str Enum for a Literal, the scalar of an
    Optional, str for anything else (`str | list[str]`: PEFT's module syntax)."""
    if typing.get_origin(hint) is Literal:
        return enum.Enum(f"Choice_{'_'.join(map(str, typing.get_args(hint)))}",
                         {str(v): str(v) for v in typing.get_args(hint)}, type=str)
    if typing.get_origin(hint) in (Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if inner == [bool]:
            return _ON_OFF
        return inner[0] if len(inner) == 1 and inner[0] in _SCALARS else str
    return hint if hint in _SCALARS else str


def _switch(flag: str, default: Any) -> tuple[str, str]:
    """(flag name, default shown) of a bool field: the one switch that flips its default."""
    return (f"--no-{flag[2:]}", " \\[default: on]") if default else (flag, "")


def _panel(prefix: str | None, section: str) -> str | None:
    return f"{prefix}: {section}" if prefix and section else prefix or section or None


def flag_annotations(cls: type, names: Iterable[str], aliases: dict[str, tuple[str, ...]] | None = None,
                     panel: str | None = None) -> dict[str, Any]:
    """Field name -> `Annotated[Optional[T], typer.Option(...)]` for the named fields of `cls`,
    each in the help panel `<panel>: <its section>`."""
    hints, aliases, titles = typing.get_type_hints(cls), aliases or {}, sections(cls)
    found = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for name in names:
        field = found[name]
        default = field.default.value if isinstance(field.default, enum.Enum) else field.default
        flag = "--" + name.replace("_", "-")
        flag_type = _flag_type(hints[name])
        if flag_type is bool:
            flag, shown = _switch(flag, default)
        else:
            shown = f" \\[default: {default}]" if default is not None else ""
        out[name] = Annotated[Optional[flag_type], typer.Option(
            flag, *aliases.get(name, ()), help=field.metadata.get("help", "") + shown,
            rich_help_panel=_panel(panel, titles.get(name, "")), show_default=False)]
    return out


def config_flags(cls: type, *, only: Iterable[str] | None = None, exclude: Iterable[str] = (),
                 aliases: dict[str, tuple[str, ...]] | None = None, into: str = "overrides",
                 panel: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add a flag per field of the dataclass `cls` (all, or `only` those, less `exclude`) to a
    command, which receives `into`: {field: value} for the flags given on the command line."""
    names = [f.name for f in dataclasses.fields(cls) if (only is None or f.name in set(only))
             and f.name not in set(exclude)]
    annotations = flag_annotations(cls, names, aliases, panel)
    flipped = {f.name for f in dataclasses.fields(cls) if f.name in names and f.default is True}  # `--no-x`

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != into]
        clash = {p.name for p in own} & set(names)
        if clash:
            raise TypeError(f"{command.__name__} already has {sorted(clash)}: exclude them from {cls.__name__}'s flags")
        added = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotations[n])
                 for n in names]

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = {n: kwargs.pop(n) for n in names}
            given = {n: (not v if n in flipped else v is _ON_OFF.on if isinstance(v, _ON_OFF)
                         else v.value if isinstance(v, enum.Enum) else v)
                     for n, v in given.items() if v is not None}
            return command(*args, **{into: given}, **kwargs)

        params = sorted([*own, *added], key=lambda p: p.kind)  # keyword-only ones last
        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        del wrapper.__wrapped__
        return wrapper

    return decorate
