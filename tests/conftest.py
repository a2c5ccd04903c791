"""Shared fixtures: every test gets its own store file and ARES_HOME; stores are closed."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    monkeypatch.setenv("ARES_HOME", str(tmp_path / "ares-home"))
    monkeypatch.setenv("ARES_DB", str(tmp_path / "ares.db"))
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "ares.db"


@pytest.fixture
def store(db_path):
    from ares_data.store import Store

    opened = Store(db_path)
    yield opened
    opened.close()


@pytest.fixture
def cli():
    """Invoke `ares ...` in-process; returns the click Result (exit_code, stdout, stderr)."""
    from ares_data.cli import app

    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(app, [str(a) for a in args], input=input)

    return invoke


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
