"""The store: one SQLAlchemy engine over SQLite (default) or PostgreSQL (psycopg 3).

Opening a store applies the pending migrations from `db/`. SQLite runs in WAL mode with a
busy timeout, so an auditor (or Datasette) reading in another process never blocks a
collector. PostgreSQL sessions run in UTC, so timestamps read the same on both. Every write
goes through `Store.session()`, one transaction per block.
"""

from __future__ import annotations

import errno
import importlib.util
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from sqlalchemy import create_engine, event, insert
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, select

from . import readonly
from .errors import SchemaError, StoreError
from .migrate import check_current, migrate as apply_migrations
from .readonly import DEFAULT_TIMEOUT_S
from .splitter import split_sentences
from .tables import ModelCheckpoint, Question, Rationale, Sentence, utcnow

DEFAULT_DB = "ares.db"
TABLES = (
    "question", "model_checkpoint", "rationale", "sentence", "teacher_call",
    "sentence_score", "correction", "export", "training_run", "eval_result",
    "pipeline_run", "pipeline_stage", "work_claim", "human_label", "teacher_attempt",
)  # fmt: skip
BUSY_TIMEOUT_MS = 30_000


def resolve_url(target: str | os.PathLike | None) -> str:
    """A path becomes `sqlite:///ABS_PATH`; a URL (anything with `://`) is kept, except that a
    plain `postgresql://` gets psycopg 3, the driver of the `postgres` extra."""
    target = str(target or os.environ.get("ARES_DB") or DEFAULT_DB)
    if "://" not in target:
        return f"sqlite:///{Path(target).expanduser().resolve()}"
    if target.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + target.split("://", 1)[1]
    return target


def _sqlite_pragmas(engine: Engine, *, read_only: bool) -> None:
    """pysqlite's own transaction handling skips BEGIN before DDL; take it over (SQLAlchemy docs)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys = ON")
        if read_only:
            cur.execute("PRAGMA query_only = ON")
            dbapi_conn.set_authorizer(readonly.refuse_attach)
        else:
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # IMMEDIATE takes the write lock up front (waiting up to the busy timeout): a deferred
        # transaction that reads, then writes after another process wrote, fails at once with
        # "database is locked" whatever the timeout (several collectors on one store).
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def check_folder(database: str, *, create: bool = False) -> None:
    """Refuse, in one line, a SQLite path whose folder is missing or not a folder (as sqlite3
    does); `create` makes a missing folder first (`ares init --parents`)."""
    folder = Path(database).parent
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        folder.stat()  # raises what is wrong on the way (ENOENT, ENOTDIR, EACCES)
        if not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
    except OSError as exc:
        hint = f" (no folder {folder}; `ares init --parents` creates it)" \
            if isinstance(exc, FileNotFoundError) and not create else ""
        raise StoreError(f"cannot create the store at {database}: {exc.strerror}{hint}") from exc


def _make_engine(url: str, *, read_only: bool = False, create_folder: bool = False) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if read_only and database and database != ":memory:":
            # mode=ro: the database itself refuses writes, whatever the SQL says.
            url = f"sqlite:///file:{Path(database).resolve()}?mode=ro&uri=true"
        elif database and database != ":memory:":
            check_folder(database, create=create_folder)
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        _sqlite_pragmas(engine, read_only=read_only)
        return engine
    if parsed.get_backend_name() != "postgresql":
        return create_engine(url, pool_pre_ping=True)
    if parsed.get_driver_name() != "psycopg" or importlib.util.find_spec("psycopg") is None:
        raise StoreError(f"{redact(url)}: PostgreSQL is used through psycopg 3: write postgresql://... "
                         "and pip install 'ares-toolkit[postgres]'")
    settings = "-c timezone=UTC"
    connect_args: dict[str, Any] = {}
    if read_only:
        # Every transaction of the session starts read-only, so a COMMIT in the query cannot
        # open a writable one; prepare_threshold=0 sends each query as a prepared statement,
        # which the server refuses to hold more than one statement (no `...; SET TRANSACTION
        # READ WRITE; DELETE ...`).
        settings += " -c default_transaction_read_only=on"
        connect_args["prepare_threshold"] = 0
    engine = create_engine(url, pool_pre_ping=True, connect_args={"options": settings, **connect_args})
    if read_only:
        event.listen(engine, "connect", _values_as_in_sqlite)
        engine = engine.execution_options(postgresql_readonly=True)
    return engine


def _values_as_in_sqlite(dbapi_conn, _record) -> None:
    """Read-only queries give the same Python values on both engines: JSON as its text (as SQLite
    stores it), NUMERIC (`AVG(integer)`, `1.0` literals) as float rather than Decimal."""
    from psycopg.types.numeric import FloatLoader
    from psycopg.types.string import TextLoader

    for name in ("json", "jsonb"):
        dbapi_conn.adapters.register_loader(name, TextLoader)
    dbapi_conn.adapters.register_loader("numeric", FloatLoader)


def redact(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a malformed URL is shown as it was given
        return url


class Store:
    """An opened, migrated store. With `migrate=False` nothing is written when it opens (`ares sql`,
    `status`, `report`: a SELECT-only role can audit); a store behind this code is refused. A
    SQLite file's folder must exist unless `create_folder` (a typo makes no store elsewhere)."""

    def __init__(self, target: str | os.PathLike | None = None, *, migrate: bool = True,
                 create_folder: bool = False):
        self.url = resolve_url(target)
        self._reader: Engine | None = None  # the read-only engine of query_readonly, made on first use
        self.applied_now: list[str] = []
        try:
            if not migrate:
                _refuse_missing_file(self.url)
            self.engine = _make_engine(self.url, create_folder=create_folder)
            if migrate:
                self.applied_now = apply_migrations(self.engine)
            else:
                check_current(self.engine)
        except SchemaError as exc:
            raise StoreError(f"{redact(self.url)}: {exc}") from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open store {redact(self.url)}: {exc.__class__.__name__}: "
                             f"{getattr(exc, 'orig', exc)}") from exc

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()
        if self._reader is not None:
            self._reader.dispose()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with Session(self.engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    # -- writes shared by importers, rollouts and collectors -------------------------------

    def add_question(self, session: Session, *, dataset: str, source_id: str, **fields: Any) -> tuple[Question, bool]:
        """Insert a question unless (`dataset`, `source_id`) exists; return (row, created)."""
        existing = session.exec(
            select(Question).where(Question.dataset == dataset, Question.source_id == source_id)
        ).first()
        if existing is not None:
            return existing, False
        row = Question(dataset=dataset, source_id=source_id, **fields)
        session.add(row)
        session.flush()
        return row, True

    def add_rationale(
        self,
        session: Session,
        *,
        question_id: int,
        source: str,
        text: str,
        dedup_key: str,
        **fields: Any,
    ) -> tuple[Rationale, bool]:
        """Insert a rationale and its sentences unless `dedup_key` exists; return (row, created)."""
        existing = session.exec(select(Rationale).where(Rationale.dedup_key == dedup_key)).first()
        if existing is not None:
            return existing, False
        row = Rationale(question_id=question_id, source=source, text=text, dedup_key=dedup_key, **fields)
        session.add(row)
        session.flush()
        for values in sentence_rows(row.id, text):
            session.add(Sentence(**values))
        return row, True

    def add_questions(self, session: Session, dataset: str, rows: Sequence[dict]) -> dict[str, tuple[int, bool]]:
        """Bulk `add_question` (one INSERT for all new rows): {source_id: (id, created)}."""
        found = dict(_in_chunks(session, select(Question.source_id, Question.id).where(Question.dataset == dataset),
                                Question.source_id, [r["source_id"] for r in rows]))
        new = [{**r, "dataset": dataset, "created_at": utcnow()} for r in rows if r["source_id"] not in found]
        out = {sid: (qid, False) for sid, qid in found.items()}
        if new:
            stmt = insert(Question).returning(Question.id, sort_by_parameter_order=True)
            for values, qid in zip(new, session.execute(stmt, new).scalars()):
                out[values["source_id"]] = (qid, True)
        return out

    def add_rationales(self, session: Session, rows: Sequence[dict]) -> int:
        """Bulk `add_rationale`: rows whose `dedup_key` exists are skipped; returns how many were new."""
        keys = [r["dedup_key"] for r in rows]
        present = {key for (key,) in _in_chunks(session, select(Rationale.dedup_key), Rationale.dedup_key, keys)}
        new = [{**r, "created_at": utcnow()} for r in rows if r["dedup_key"] not in present]
        if not new:
            return 0
        stmt = insert(Rationale).returning(Rationale.id, sort_by_parameter_order=True)
        ids = session.execute(stmt, new).scalars().all()
        sentences = [values for rid, r in zip(ids, new) for values in sentence_rows(rid, r["text"])]
        if sentences:
            session.execute(insert(Sentence), sentences)
        return len(new)

    def register_checkpoint(self, session: Session, *, name: str, **fields: Any) -> ModelCheckpoint:
        """The checkpoint named `name`, created with `fields` the first time."""
        found = session.exec(select(ModelCheckpoint).where(ModelCheckpoint.name == name)).first()
        if found is not None:
            return found
        row = ModelCheckpoint(name=name, **fields)
        session.add(row)
        session.flush()
        return row

    # -- reads ----------------------------------------------------------------------------

    def table_counts(self) -> dict[str, int]:
        """Rows per table, read as `ares sql` reads (a SELECT-only role can ask)."""
        counts = self.query_readonly(" UNION ALL ".join(f"SELECT '{t}', COUNT(*) FROM {t}" for t in TABLES))[1]
        return {table: n for table, n in counts}

    def query_readonly(self, sql: str, params: dict | None = None, timeout_s: float | None = DEFAULT_TIMEOUT_S,
                       untrusted: bool = False) -> tuple[list[str], list[Sequence[Any]]]:
        """Run one statement, `sql`, that the database itself keeps from writing (readonly.py),
        stopped after `timeout_s` seconds; `untrusted`: a user's SQL (`ares sql`)."""
        if self._reader is None:
            self._reader = _make_engine(self.url, read_only=True)
        return readonly.run(self._reader, sql, params, timeout_s, untrusted)


def _refuse_missing_file(url: str) -> None:
    """Opening without migrations must not create an empty SQLite file where a store was expected."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:") \
            and not Path(parsed.database).exists():
        raise StoreError(f"no store at {parsed.database}: `ares init` creates one")


def _in_chunks(session: Session, stmt: Any, column: Any, values: Sequence[Any], size: int = 500) -> list[tuple]:
    """The rows of `stmt WHERE column IN values`, asked 500 values at a time (SQLite's bind limit)."""
    found: list[tuple] = []
    for i in range(0, len(values), size):
        found.extend(tuple(row) for row in session.execute(stmt.where(column.in_(values[i:i + size]))))
    return found


def sentence_rows(rationale_id: int, text: str) -> list[dict]:
    """The `sentence` rows of one rationale: its split, with exact character spans."""
    return [{"rationale_id": rationale_id, "idx": idx, "text": span.text, "start_char": span.start,
             "end_char": span.end} for idx, span in enumerate(split_sentences(text))]

