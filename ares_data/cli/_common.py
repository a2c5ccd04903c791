"""What every command shares: the state on ctx.obj, error handling, shared options."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from ..errors import AresError
from ..extras import missing_extra

if TYPE_CHECKING:
    from ..store import Store

console = Console()
err_console = Console(stderr=True)


@dataclass
class State:
    """Settings that travel on `ctx.obj`; the store is opened on first use."""

    db: Optional[str] = None
    _store: Optional["Store"] = field(default=None, repr=False)

    def store(self, migrate: bool = True) -> "Store":
        """The store, migrated on open unless `migrate` is False (read-only commands)."""
        if self._store is None:
            from ..store import Store

            self._store = Store(self.db, migrate=migrate)
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


def fail(message: str) -> "typer.Exit":
    """Print one error line and return the Exit to raise (for CLI-level input problems)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


RoundReq = Annotated[int, typer.Option("--round", min=1, help="Training round (1, 2, ...).")]
RoundOpt = Annotated[Optional[int], typer.Option("--round", help="Training round (1, 2, ...).")]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", min=1, help="Stop after this many items.")]
