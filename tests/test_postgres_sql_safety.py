"""`ares sql` cannot reach the server's files, programs or tables even with a superuser's URL; it
stops at --timeout; a SELECT-only role can audit a store it cannot migrate. SQLite refuses ATTACH."""

import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from ares_data.errors import ReadOnlyError, StoreError
from ares_data.migrate import load_migrations
from ares_data.store import Store, resolve_url


@pytest.fixture
def pg_store(pg_url):
    with Store(pg_url) as opened:
        yield opened


def _admin(url):
    return create_engine(resolve_url(url), isolation_level="AUTOCOMMIT")


def test_a_superuser_url_cannot_run_programs_or_read_server_files(pg_store, pg_url):
    marker = Path("/tmp") / f"ares-escape-{uuid.uuid4().hex}"
    escapes = [
        f"COPY (SELECT 1) TO PROGRAM 'touch {marker}'",
        "SELECT pg_read_file('PG_VERSION')",
        f"SELECT lo_export(1, '{marker}')",
        "SELECT pg_ls_dir('.')",
        # a role change from within the query would undo SET ROLE: refused inside ares_read()
        "SELECT set_config('role', 'postgres', true), "
        "query_to_xml('SELECT pg_read_file(''PG_VERSION'')', true, false, '')",
        "SELECT query_to_xml('RESET ROLE', true, false, '')",
        f"DO $$ BEGIN RESET ROLE; EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch {marker}'''; END $$",
    ]
    for sql in escapes:
        with pytest.raises(ReadOnlyError, match="refused"):
            pg_store.query_readonly(sql)
    assert not marker.exists()
    # the same URL used directly reads the file, even after SET ROLE (the role change undoes it):
    # what is refused above is refused by ares sql
    engine = _admin(pg_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT pg_read_file('PG_VERSION')").scalar().strip().isdigit()
        conn.exec_driver_sql("SET ROLE ares_reader")
        assert "<pg_read_file>" in conn.exec_driver_sql(escapes[4].replace("%", "%%")).one()[1]
    engine.dispose()
    assert pg_store.query_readonly("SELECT current_user, session_user")[1] == [("ares_reader", "postgres")]


def test_user_sql_is_refused_when_a_superuser_url_has_no_reader_to_run_as(pg_store, pg_url, cli):
    """Migration 0014 skips the reader where it may not create roles; a superuser's URL would then
    run `ares sql` as itself, and a read-only transaction does not stop COPY TO PROGRAM: refused,
    in one line saying why. The toolkit's own queries (status) still read."""
    admin = _admin(pg_url)
    with admin.connect() as conn:
        conn.exec_driver_sql("DROP FUNCTION ares_read(text)")  # as when 0014 skipped its block
    admin.dispose()
    marker = Path("/tmp") / f"ares-escape-{uuid.uuid4().hex}"
    for sql in (f"DO $$ BEGIN RESET ROLE; EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch {marker}'''; END $$",
                "SELECT pg_read_file('PG_VERSION')", "SELECT 1"):
        result = cli("--db", pg_url, "sql", sql)
        assert result.exit_code == 1, (sql, result.stdout)
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("error: refused: postgres can run programs") and "ares_read() is missing" in line
    assert not marker.exists()
    assert cli("--db", pg_url, "status").exit_code == 0


def test_writes_and_typed_values_through_the_reader(pg_store, cli, pg_url):
    result = cli("--db", pg_url, "sql", "SELECT nextval(pg_get_serial_sequence('question', 'id'))")
    assert result.exit_code == 1 and "refused" in result.stderr
    columns, rows = pg_store.query_readonly(
        "SELECT 1 AS n, 2.5::numeric AS x, 'a' AS s, NULL AS nothing, '{\"k\": 1}'::json AS j, "
        "TIMESTAMP '2026-01-01 10:00' AS t, 'it''s' AS p, 1 AS n")
    assert columns == ["n", "x", "s", "nothing", "j", "t", "p", "n"]
    assert rows[0][:5] == (1, 2.5, "a", None, '{"k": 1}') and rows[0][5].year == 2026 and rows[0][6] == "it's"
    # the toolkit's own parameterised queries run as ares_reader without the wrapper
    rows = pg_store.query_readonly("SELECT current_user AS u, :p AS p", {"p": 1, "unused": 2})[1]
    assert rows == [("ares_reader", 1)]


def test_a_statement_timeout_stops_a_long_query(pg_store, pg_url, cli):
    with pytest.raises(StoreError, match="ran past --timeout 0.2 s"):
        pg_store.query_readonly("SELECT pg_sleep(5)", timeout_s=0.2)
    result = cli("--db", pg_url, "sql", "--timeout", "0.2", "SELECT pg_sleep(5)")
    assert result.exit_code == 1 and "--timeout" in result.stderr


def test_a_select_only_role_audits_without_migrating(pg_store, pg_url, cli, tmp_path):
    admin = _admin(pg_url)
    with admin.connect() as conn:
        conn.exec_driver_sql("DO $$ BEGIN CREATE ROLE auditor LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; "
                             "END $$")
        conn.exec_driver_sql("GRANT SELECT ON ALL TABLES IN SCHEMA public TO auditor")
    auditor = make_url(resolve_url(pg_url)).set(username="auditor").render_as_string(hide_password=False)
    with pytest.raises(StoreError):  # it cannot migrate: opening for writing fails
        Store(auditor).close()
    for command in (["sql", "SELECT COUNT(*) AS n FROM question"], ["status"],
                    ["report", "--out", str(tmp_path / "report")]):
        result = cli("--db", auditor, *command)
        assert result.exit_code == 0, (command, result.stderr)
    with admin.connect() as conn:  # a store one migration behind this code
        conn.exec_driver_sql(f"DELETE FROM schema_migration WHERE name = '{load_migrations()[-1].name}'")
    admin.dispose()
    behind = cli("--db", auditor, "sql", "SELECT 1")
    assert behind.exit_code == 1 and "behind this version of ares" in behind.stderr and "ares init" in behind.stderr


def test_sqlite_refuses_attach_and_stops_at_the_timeout(store, tmp_path, cli):
    other = tmp_path / "other.db"
    with pytest.raises(ReadOnlyError, match="not authorized"):
        store.query_readonly(f"ATTACH DATABASE '{other}' AS other")
    assert not other.exists()
    endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT COUNT(*) FROM n"
    with pytest.raises(StoreError, match="ran past --timeout 0.2 s"):
        store.query_readonly(endless, timeout_s=0.2)
    missing = cli("--db", str(tmp_path / "nothing.db"), "sql", "SELECT 1")
    assert missing.exit_code == 1 and "ares init" in missing.stderr and not (tmp_path / "nothing.db").exists()
