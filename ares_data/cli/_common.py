"""What every command shares: the state on ctx.obj, error handling, shared options."""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from typer.core import TyperGroup, TyperOption

from ..errors import AresError
from ..extras import missing_extra

if TYPE_CHECKING:
    from rich.table import Table

    from ..store import Store

console = Console()
err_console = Console(stderr=True)


@dataclass
class State:
    """Settings that travel on `ctx.obj`; the store is opened on first use."""

    db: Optional[str] = None
    _store: Optional["Store"] = field(default=None, repr=False)

    def store(self, migrate: bool = True, create_folder: bool = False) -> "Store":
        """The store, migrated on open unless `migrate` is False (read-only commands); a SQLite
        file's missing folder is made only with `create_folder` (`ares init --parents`)."""
        if self._store is None:
            from ..store import Store

            self._store = Store(self.db, migrate=migrate, create_folder=create_folder)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def state(ctx: typer.Context) -> State:
    root = ctx.find_root()
    if root.obj is None:
        root.obj = State()
    return root.obj


def store(ctx: typer.Context) -> "Store":
    return state(ctx).store()


def reading_store(ctx: typer.Context) -> "Store":
    """The store opened without migrating it, so a SELECT-only role can audit (sql, status, report)."""
    return state(ctx).store(migrate=False)


class AresGroup(TyperGroup):
    """Turns the project's own errors, and a missing optional library, into one line on stderr and exit 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except AresError as exc:
            raise fail(str(exc)) from exc
        except ModuleNotFoundError as exc:
            hint = missing_extra(exc)
            if hint is None:
                raise
            raise fail(str(hint)) from exc
        finally:
            if isinstance(ctx.obj, State):
                ctx.obj.close()


def _flag_type_rich(option: TyperOption, ctx: Any) -> Optional[str]:
    """A flag takes no value, so its help shows no type: typer 0.29 prints `<bool>` beside every
    flag (`--json`, even `--help`)."""
    return None if option.is_flag else _value_type_rich(option, ctx)


_value_type_rich = TyperOption.display_type_rich
TyperOption.display_type_rich = _flag_type_rich  # type: ignore[method-assign,assignment]


def fail(message: str) -> "typer.Exit":
    """Print one error line and return the Exit to raise (for CLI-level input problems)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


RoundReq = Annotated[int, typer.Option("--round", min=1, help="Training round (1, 2, ...).")]
RoundOpt = Annotated[Optional[int], typer.Option("--round", help="Training round (1, 2, ...).")]
# --limit means one thing everywhere: the first N items of the selection in id order, done ones
# included, so a re-run with the same --limit adds nothing and a larger one continues.
LimitOpt = Annotated[Optional[int], typer.Option(
    "--limit", min=1, metavar="N", help="Only the split's first N questions (id order), those already done included: "
                                        "re-run with the same N, nothing is added; with a larger N, it continues.")]
RationaleLimitOpt = Annotated[Optional[int], typer.Option(
    "--limit", min=1, metavar="N", help="Only the selection's first N rationales (id order), those already answered "
                                        "included: re-run with the same N, nothing is asked; with a larger N, it "
                                        "continues.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (row objects) instead of tables.")]


def print_table(table: "Table") -> None:
    """On a terminal, as wide as the screen; piped or redirected, at the table's own width, so
    nothing is cut to `…` (rich would otherwise fit it into 80 columns)."""
    if console.is_terminal:
        console.print(table)
        return
    natural = Measurement.get(console, console.options.update_width(1_000_000), table).maximum
    Console(width=max(natural, console.width)).print(table)


def jsonable(value: Any) -> Any:
    """A table cell as JSON: numbers, text, booleans and null as they are, anything else as text."""
    return value if isinstance(value, (int, float, str, type(None), bool)) else str(value)


def print_json(document: Any) -> None:
    """One JSON document on stdout (what `--json` prints)."""
    sys.stdout.write(json.dumps(document, indent=2, default=jsonable, ensure_ascii=False) + "\n")


def print_summary(summary: Any, as_json: bool = False) -> None:
    """A run's summary (a dataclass with `lines()`): its lines, or with `as_json` its fields."""
    if as_json:
        print_json({f.name: getattr(summary, f.name) for f in dataclasses.fields(summary)})
    else:
        for line in summary.lines():
            console.print(line, highlight=False, soft_wrap=True)
