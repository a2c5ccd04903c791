"""Store commands: `init`, `status`, `sql`, `split`."""

from __future__ import annotations

import csv
import json
import sys
from enum import Enum
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ._common import JsonOpt, console, jsonable, print_json, print_table, reading_store, state


class SqlFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


def row_objects(columns: list[str], rows: list) -> list[dict[str, Any]]:
    return [{c: jsonable(v) for c, v in zip(columns, r)} for r in rows]


def print_rows(columns: list[str], rows: list, fmt: SqlFormat = SqlFormat.table, title: str | None = None) -> None:
    """Rows as a rich table, a JSON list of objects, or CSV (shared by every listing command)."""
    if fmt is SqlFormat.json:
        print_json(row_objects(columns, rows))
    elif fmt is SqlFormat.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        table = Table(*columns, title=title)
        for row in rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        print_table(table)


def print_tables(tables: dict[str, tuple[list[str], list]], as_json: bool = False, skip_empty: bool = False) -> None:
    """Titled tables; with `as_json` one JSON object {title: [row objects]} (every table, empty or not)."""
    if as_json:
        print_json({title: row_objects(columns, rows) for title, (columns, rows) in tables.items()})
    else:
        for title, (columns, rows) in tables.items():
            if rows or not skip_empty:
                print_rows(columns, rows, title=title)


def init(ctx: typer.Context, parents: Annotated[bool, typer.Option(
        "--parents", help="Create the store's missing folders (else a missing folder is refused, as sqlite3 does, "
                          "so a typo makes no store elsewhere).")] = False) -> None:
    """Create the store (or bring it up to date) by applying the migrations in db/."""
    opened = state(ctx).store(create_folder=parents)
    applied = opened.applied_now
    from ..store import redact

    console.print(f"store {redact(opened.url)}: " + (f"applied {', '.join(applied)}" if applied else "up to date"),
                  soft_wrap=True)


def status(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Counts per table, per dataset and split, and per round and stage; each round's teacher spend
    (round 0: the gold rationales) and the total. Empty tables are left out (not with --json), and a
    store that holds little yet says what to do next."""
    from ..audit import next_step, status_tables

    opened = reading_store(ctx)
    tables = status_tables(opened)
    if not as_json:
        columns, rows = tables["Tables"]
        tables["Tables"] = (columns, [row for row in rows if row[1]])
    print_tables(tables, as_json, skip_empty=True)
    hint = None if as_json else next_step(opened.table_counts())
    if hint:
        console.print(hint, highlight=False, soft_wrap=True)


def sql(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="A read-only SQL query, e.g. \"SELECT * FROM v_round_summary\".")],
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list of row objects.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV with a header row.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=0.001, metavar="SECONDS",
                                           help="Stop the query after this long.")] = 30.0,
) -> None:
    """Run a read-only query; writes are refused by the database itself (on PostgreSQL as the
    ares_reader role: no COPY TO PROGRAM, pg_read_file or lo_export either). SQLite: no ATTACH."""
    columns, rows = reading_store(ctx).query_readonly(query, timeout_s=timeout, untrusted=True)
    fmt = SqlFormat.json if as_json else SqlFormat.csv if as_csv else SqlFormat.table
    print_rows(columns, rows, fmt)


def split(
    text: Annotated[Optional[str], typer.Argument(help="Text to split; '-' or nothing reads stdin.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help='Print [{"text","start","end"}, ...].')] = False,
) -> None:
    """Split text into sentences the way every stage of ARES does."""
    from ..splitter import split_sentences

    source = sys.stdin.read() if text in (None, "-") else text
    spans = split_sentences(source)
    if as_json:
        sys.stdout.write(json.dumps([s._asdict() for s in spans], ensure_ascii=False) + "\n")
    else:
        for span in spans:
            sys.stdout.write(span.text.replace("\n", " ") + "\n")


def register(app: typer.Typer) -> None:
    app.command()(init)
    app.command()(status)
    app.command()(sql)
    app.command()(split)
