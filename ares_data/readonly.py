"""Read-only queries (`ares sql`, `status`, `report`): what the database itself refuses.

SQLite: the file is opened `mode=ro` with `query_only`; an authorizer refuses ATTACH and
DETACH (no other file is opened or created), and a progress handler stops a query at its
time limit. PostgreSQL: every transaction is read-only and runs one statement; inside it,
`SET LOCAL statement_timeout` and `SET LOCAL ROLE ares_reader` (migration 0014), and the query
itself runs through `ares_read()`, a SECURITY DEFINER function of that role, where PostgreSQL
refuses to change role: `COPY ... TO PROGRAM`, `pg_read_file`, `lo_export` and writes are refused
even for a superuser's URL. The toolkit's own parameterised queries (status, report) run as
ares_reader without the wrapper. A store without the role or the wrapper (no right to create
them) or a connecting role that is not a member of it reads as itself, in a read-only
transaction, except user SQL (`untrusted`) from a role that can run programs or read and write
server files (a superuser, pg_execute_server_program, ...): a read-only transaction does not
stop those, so that SQL is refused.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any, Sequence

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from .errors import ReadOnlyError, StoreError

DEFAULT_TIMEOUT_S = 30.0
READER_ROLE = "ares_reader"
_CAN_READ_AS = text(
    "SELECT CASE WHEN r.oid IS NULL THEN false ELSE pg_has_role(r.oid, 'MEMBER') END, "
    "to_regprocedure('ares_read(text)') IS NOT NULL, "
    # what a read-only transaction does not stop: the login role (RESET ROLE returns to it) running
    # programs or reading and writing the server's files
    "(SELECT rolsuper FROM pg_roles WHERE rolname = session_user) OR " + " OR ".join(
        f"pg_has_role(session_user, '{role}', 'MEMBER')"
        for role in ("pg_execute_server_program", "pg_read_server_files", "pg_write_server_files")) + ", "
    "session_user "
    f"FROM (SELECT (SELECT oid FROM pg_roles WHERE rolname = '{READER_ROLE}') AS oid) r")


def refuse_attach(action: int, *_: Any) -> int:
    """sqlite3 authorizer: ATTACH and DETACH are refused, everything else is left to mode=ro."""
    return sqlite3.SQLITE_DENY if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH) else sqlite3.SQLITE_OK


def run(engine: Engine, sql: str, params: dict | None, timeout_s: float | None,
        untrusted: bool = False) -> tuple[list[str], list[Sequence]]:
    """(columns, rows) of one read-only statement; refusals and timeouts as one-line errors.
    `untrusted`: SQL a user typed (`ares sql`), refused where no read-only role can run it."""
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                return _postgresql(conn, sql, params or {}, timeout_s, untrusted)
            if engine.dialect.name == "sqlite":
                return _sqlite(conn, sql, params or {}, timeout_s)
            return _plain(conn, sql, params or {})
    except DBAPIError as exc:
        raise _translate(exc, sql, timeout_s) from exc


def _plain(conn: Connection, sql: str, params: dict) -> tuple[list[str], list[Sequence]]:
    result = conn.execute(text(sql), params)
    if not result.returns_rows:
        return [], []
    return list(result.keys()), [tuple(r) for r in result.fetchall()]


def _sqlite(conn: Connection, sql: str, params: dict, timeout_s: float | None) -> tuple[list[str], list[Sequence]]:
    raw = conn.connection.driver_connection
    if timeout_s:
        deadline = time.monotonic() + timeout_s
        raw.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
    try:
        return _plain(conn, sql, params)
    finally:
        raw.set_progress_handler(None, 0)


def _verb(sql: str) -> str:
    words = sql.split()
    return words[0].upper() if words else "an empty statement"


def _postgresql(conn: Connection, sql: str, params: dict, timeout_s: float | None,
                untrusted: bool) -> tuple[list[str], list[Sequence]]:
    conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int((timeout_s or 0) * 1000)}")
    member, wrapper, privileged, login = conn.execute(_CAN_READ_AS).one()
    if untrusted and privileged and not (member and wrapper):
        missing = "ares_read() is missing" if not wrapper else f"{login} is not a member of {READER_ROLE}"
        raise ReadOnlyError(f"refused: {login} can run programs and read server files even in a read-only "
                            f"transaction, and `ares sql` cannot run as {READER_ROLE} here ({missing}: migration "
                            "0014 could not set it up); connect as a role without those rights, or see docs/sql.md")
    if not member:
        return _plain(conn, sql, params)
    conn.exec_driver_sql(f"SET LOCAL ROLE {READER_ROLE}")
    if not wrapper or params:  # the toolkit's own parameterised SQL: typed by no user, no wrapper needed
        return _plain(conn, sql, params)
    raw = conn.connection.driver_connection
    query = sql.strip().rstrip(";")
    columns, types = _describe(raw, query)
    if not columns:  # a write, DO, SET ...: nothing to read, refused before it runs
        raise ReadOnlyError(f"refused: `ares sql` runs queries that return rows, and {_verb(query)} returns none")
    names = ", ".join(f"c{i}" for i in range(len(columns)))
    cells = ", ".join(f"q.c{i}::text" for i in range(len(columns)))
    wrapped = f"SELECT ARRAY[{cells}] FROM (\n{query}\n) AS q({names})"
    loaders = [_loader(raw, oid) for oid in types]
    try:
        rows = conn.execute(text("SELECT ares_read(:q)"), {"q": wrapped}).scalars().all()
    except DBAPIError as exc:
        if "syntax error" in str(exc.orig):  # EXPLAIN, SHOW, ... RETURNING: not a query to read from
            raise StoreError("SQL error: on PostgreSQL `ares sql` runs SELECT, VALUES, TABLE and WITH queries "
                             f"({str(exc.orig).strip().splitlines()[0]})") from exc
        raise
    return columns, [tuple(None if v is None else load.load(v.encode()) for load, v in zip(loaders, row))
                     for row in rows]


def _loader(raw: Any, oid: int) -> Any:
    """The loader psycopg uses for a column of this type in text form (text itself when unknown)."""
    from psycopg import pq
    from psycopg.types.string import TextLoader

    return (raw.adapters.get_loader(oid, pq.Format.TEXT) or TextLoader)(oid, raw)


def _describe(raw: Any, query: str) -> tuple[list[str], list[int]]:
    """Column names and type oids of `query`, from the server's parse (nothing is executed)."""
    from psycopg import pq

    pgconn = raw.pgconn
    prepared = pgconn.prepare(b"", query.encode())
    if prepared.status != pq.ExecStatus.COMMAND_OK:
        raise StoreError(f"SQL error: {prepared.get_error_message().strip().splitlines()[0]}")
    described = pgconn.describe_prepared(b"")
    return ([described.fname(i).decode() for i in range(described.nfields)],
            [described.ftype(i) for i in range(described.nfields)])


def _translate(exc: DBAPIError, sql: str, timeout_s: float | None) -> StoreError:
    message = str(exc.orig).strip().splitlines()[0]
    lowered = message.lower()
    if "statement timeout" in lowered or lowered == "interrupted":
        return StoreError(f"the query ran past --timeout {timeout_s:g} s and was stopped")
    if any(word in lowered for word in ("readonly", "read-only", "read only")):  # the message says it once
        return ReadOnlyError(f"refused: `ares sql` only reads (the database refused this {_verb(sql)})")
    if any(word in lowered for word in ("permission denied", "not authorized", "must be superuser", "not allowed",
                                        "cannot set parameter")):
        return ReadOnlyError(f"refused by the database: {message}")
    return StoreError(f"SQL error: {message}")
