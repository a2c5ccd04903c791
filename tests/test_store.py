"""The store: migrations, schema interface, read-only SQL."""

import re
import sqlite3

import pytest
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import SQLModel

from ares_data import tables
from ares_data.errors import ReadOnlyError, StoreError
from ares_data.migrate import Migration, load_migrations
from ares_data.store import TABLES, Store


def test_migrations_create_every_table_and_view(store, db_path):
    con = sqlite3.connect(db_path)
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type IN ('table','view')")}
    assert set(TABLES) <= names
    assert {"v_sentence_scores", "v_teacher_calls", "v_round_summary", "schema_migration"} <= names
    recorded = [r[0] for r in con.execute("SELECT name FROM schema_migration ORDER BY name")]
    assert recorded == [m.name for m in load_migrations()]
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_models_match_the_migrated_schema(store, db_path):
    """The SQL files own the schema; the SQLModel mapping must name the same columns."""
    con = sqlite3.connect(db_path)
    for table in (*TABLES, "teacher_call_rationale", "teacher_batch", "teacher_batch_request", "request_claim"):
        in_db = {r[1] for r in con.execute(f"PRAGMA table_info({table})")}
        in_model = {c.name for c in SQLModel.metadata.tables[table].columns}
        assert in_db == in_model, table


def test_interface_names(store, db_path):
    con = sqlite3.connect(db_path)
    cols = lambda t: {r[1] for r in con.execute(f"PRAGMA table_info({t})")}  # noqa: E731
    assert {"rationale_id", "idx", "text", "start_char", "end_char"} <= cols("sentence")
    assert {"sentence_id", "teacher_call_id", "score"} <= cols("sentence_score")
    assert {"source", "question_id", "model_checkpoint_id", "round"} <= cols("rationale")
    with pytest.raises(sqlite3.IntegrityError):
        con.execute("INSERT INTO model_checkpoint (name, path, base_model, stage, created_at)"
                    " VALUES ('x', 'p', 'b', 'final', '2026-01-01')")


def test_reopen_applies_nothing(db_path):
    with Store(db_path) as first:
        assert first.applied_now
    with Store(db_path) as second:
        assert second.applied_now == []


def test_store_newer_than_code_is_refused(db_path):
    with Store(db_path):
        pass
    con = sqlite3.connect(db_path)
    con.execute("INSERT INTO schema_migration VALUES ('9999_from_the_future', '2030-01-01')")
    con.commit()
    with pytest.raises(StoreError, match="9999_from_the_future.*upgrade ares"):
        Store(db_path)


def test_failed_migration_leaves_nothing_behind(db_path):
    from ares_data.migrate import migrate

    with Store(db_path) as opened:
        bad = load_migrations() + [Migration("0900_broken", "CREATE TABLE half (id INTEGER);\nNOT SQL;")]
        with pytest.raises(SQLAlchemyError):
            migrate(opened.engine, bad)
    con = sqlite3.connect(db_path)
    assert con.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'half'").fetchone()[0] == 0
    assert con.execute("SELECT COUNT(*) FROM schema_migration WHERE name = '0900_broken'").fetchone()[0] == 0


@pytest.mark.both_backends
def test_sql_write_is_refused_by_the_database(cli, store):
    with store.session() as s:
        s.add(tables.Question(dataset="d", source_id="1", split="train", question="q", choices=["a"]))
    with pytest.raises(ReadOnlyError):
        store.query_readonly("DELETE FROM question")
    result = cli("sql", "DELETE FROM question")
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()  # one line, saying it once (not "read-only: ... readonly")
    assert line.startswith("error: refused: `ares sql`") and "DELETE" in line
    assert len(re.findall(r"read.?only", line, re.IGNORECASE)) <= 1
    assert store.table_counts()["question"] == 1


@pytest.mark.both_backends
def test_sql_formats(cli, store):
    with store.session() as s:
        s.add(tables.Question(dataset="d", source_id="1", split="train", question="q", choices=["a"]))
    out = cli("sql", "SELECT dataset, split FROM question", "--json")
    assert out.exit_code == 0 and '"dataset": "d"' in out.stdout
    out = cli("sql", "SELECT dataset, split FROM question", "--csv")
    assert out.stdout.splitlines() == ["dataset,split", "d,train"]
    bad = cli("sql", "SELECT nope FROM question")
    assert bad.exit_code == 1 and "SQL error" in bad.stderr


def test_help_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; from ares_data.cli import app; "
            "print('torch' in sys.modules, 'transformers' in sys.modules, 'datasets' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]


def test_public_names_resolve():
    import ares_data

    for name in ares_data.__all__:
        assert getattr(ares_data, name) is not None, name
    with pytest.raises(AttributeError):
        ares_data.not_a_public_name  # noqa: B018
