"""The PostgreSQL store: the same schema, atomic migrations, `ares sql` read-only by the server,
plain `postgresql://` URLs, UTC timestamps. Skipped (with the reason) when no server can start."""

from datetime import datetime, timezone

import pytest
from sqlalchemy import create_engine, inspect
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import SQLModel

from ares_data import tables as m
from ares_data.errors import ReadOnlyError, StoreError
from ares_data.evaluation import accuracy_tables
from ares_data.migrate import Migration, load_migrations, migrate
from ares_data.store import TABLES, Store, resolve_url


@pytest.fixture
def pg_store(pg_url):
    with Store(pg_url) as opened:
        yield opened


def _question(store, source_id="1", **fields):
    with store.session() as s:
        row = m.Question(dataset="d", source_id=source_id, split="test", question="q", choices=["a", "b"],
                         answer_index=0, **fields)
        s.add(row)
    return row


def test_migrations_build_the_mapped_schema(pg_url, pg_store):
    insp = inspect(pg_store.engine)
    assert set(TABLES) | {"schema_migration"} <= set(insp.get_table_names())
    assert {"v_sentence_scores", "v_teacher_calls", "v_round_summary"} <= set(insp.get_view_names())
    for table in TABLES:
        in_db = {c["name"] for c in insp.get_columns(table)}
        assert in_db == {c.name for c in SQLModel.metadata.tables[table].columns}, table
    recorded = [r[0] for r in pg_store.query_readonly("SELECT name FROM schema_migration ORDER BY name")[1]]
    assert recorded == [mig.name for mig in load_migrations()]
    with Store(pg_url) as again:
        assert again.applied_now == []


def test_constraints_hold(pg_store):
    with pytest.raises(IntegrityError):
        with pg_store.session() as s:
            s.add(m.ModelCheckpoint(name="x", path="p", base_model="b", stage="final"))
    _question(pg_store)
    with pytest.raises(IntegrityError):
        _question(pg_store)


def test_a_failed_migration_leaves_nothing_behind(pg_store):
    bad = load_migrations() + [Migration("0900_broken", "CREATE TABLE half (id INTEGER);\nNOT SQL;")]
    with pytest.raises(SQLAlchemyError):
        migrate(pg_store.engine, bad)
    assert "half" not in inspect(pg_store.engine).get_table_names()
    assert pg_store.query_readonly("SELECT COUNT(*) FROM schema_migration WHERE name = '0900_broken'")[1] == [(0,)]


ESCAPES = [
    "COMMIT; DELETE FROM question",
    "SET TRANSACTION READ WRITE; DELETE FROM question",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; COMMIT; DELETE FROM question",
    "SELECT 1; DELETE FROM question",
    "DO $$ BEGIN SET TRANSACTION READ WRITE; DELETE FROM question; END $$",
    "DO $$ BEGIN COMMIT; DELETE FROM question; END $$",
    "WITH gone AS (DELETE FROM question RETURNING id) SELECT id FROM gone",
    "CREATE TABLE sneaky (id INTEGER)",
    "SELECT nextval(pg_get_serial_sequence('question', 'id'))",
]


def test_ares_sql_cannot_write_by_any_route(pg_store, cli, pg_url):
    _question(pg_store)
    with pytest.raises(ReadOnlyError, match="DELETE returns none"):
        pg_store.query_readonly("DELETE FROM question")
    for sql in ESCAPES:
        with pytest.raises(StoreError):
            pg_store.query_readonly(sql)
        assert pg_store.table_counts()["question"] == 1, sql
    assert "sneaky" not in inspect(pg_store.engine).get_table_names()
    result = cli("--db", pg_url, "sql", "UPDATE question SET split = 'train'")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: refused: `ares sql`") and "UPDATE" in result.stderr
    assert pg_store.query_readonly("SELECT split FROM question WHERE source_id = :s", {"s": "1"})[1] == [("test",)]


def test_plain_postgresql_urls_get_psycopg3():
    assert resolve_url("postgresql://u:p@db.example:5432/ares") == "postgresql+psycopg://u:p@db.example:5432/ares"
    assert resolve_url("postgres://db.example/ares") == "postgresql+psycopg://db.example/ares"
    assert resolve_url("postgresql+psycopg://db.example/ares") == "postgresql+psycopg://db.example/ares"


def test_another_postgresql_driver_is_refused_without_showing_the_password():
    with pytest.raises(StoreError, match="psycopg 3") as caught:
        Store("postgresql+psycopg2://ares:s3cret@127.0.0.1:1/ares")
    assert "s3cret" not in str(caught.value)


def test_cli_with_a_plain_postgresql_url(cli, pg_url):
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://")
    out = cli("--db", plain, "init")
    assert out.exit_code == 0, out.output
    assert "applied 0001_initial" in out.stdout
    assert cli("--db", plain, "import", "example").exit_code == 0
    status = cli("--db", plain, "status")
    assert status.exit_code == 0 and "science_demo" in status.stdout
    listed = cli("--db", plain, "sql", "SELECT choices FROM question ORDER BY id LIMIT 1", "--json")
    assert listed.exit_code == 0 and '"choices": "[' in listed.stdout  # JSON columns print as text, as on SQLite


def test_timestamps_are_utc_whatever_the_server_zone(pg_url, pg_cluster):
    database = pg_url.rsplit("/", 1)[1]
    admin = create_engine(resolve_url(pg_cluster), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'ALTER DATABASE "{database}" SET timezone TO \'America/New_York\'')
    admin.dispose()
    with Store(pg_url) as store:
        _question(store, created_at=datetime(2026, 1, 2, 12, 0, tzinfo=timezone.utc))
        (stamp,), = store.query_readonly("SELECT created_at FROM question")[1]
    assert stamp == datetime(2026, 1, 2, 12, 0)


@pytest.mark.both_backends
def test_accuracy_tables_agree_on_both_engines(store):
    with store.session() as s:
        ckpt = m.ModelCheckpoint(name="base", path="p", base_model="p", stage="base")
        s.add(ckpt)
        s.flush()
        for n, (subject, predicted) in enumerate([("bio", 0), ("bio", 1), ("geo", None)]):
            q = m.Question(dataset="d", source_id=str(n), split="test", question="q", choices=["a", "b"],
                           answer_index=0, subject=subject)
            s.add(q)
            s.flush()
            s.add(m.EvalResult(kind="accuracy", model_checkpoint_id=ckpt.id, question_id=q.id, split="test",
                               predicted_answer=predicted, correct=predicted == 0))
    tables = accuracy_tables(store, ckpt.id, "test")
    assert tables["overall"] == (["group", "questions", "correct", "accuracy", "unparsed"], [("all", 3, 1, 0.3333, 1)])
    assert tables["subject"][1] == [("bio", 2, 1, 0.5, 0), ("geo", 1, 0, 0.0, 1)]
