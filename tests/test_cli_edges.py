"""A new user's first hour: a bad --db, a missing folder, empty results, no terminal. Each
answer is one line that says what is wrong (or what to do next), never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Every kind of command that opens the store: migrating, read-only, and the `train` plugin's.
STORE_COMMANDS = [
    ["init"], ["status"], ["sql", "SELECT 1"], ["import", "example"], ["agreement"], ["batch", "status"],
    ["collect-scores", "--rationales", "gold", "--dry-run", "--model", "gpt-4o"], ["report", "--out", "{tmp}/r"],
    ["review", "export", "--out", "{tmp}/t.json"], ["export", "rl", "--round", "1", "--out", "{tmp}/rl"],
    ["generate", "--model", "smollm2", "--round", "1"], ["eval", "accuracy", "--checkpoint", "latest"],
    ["train", "rl", "--round", "1"],
]


@pytest.mark.parametrize("command", STORE_COMMANDS, ids=lambda c: " ".join(c[:2]))
@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_a_store_path_that_cannot_be_made_is_one_line_for_every_command(cli, tmp_path, command, where):
    a_file = tmp_path / "some_file"
    a_file.write_text("not a folder")
    db = a_file / "x.db" if where == "under-a-file" else Path("/proc/nope/x.db")
    out = cli("--db", db, *(part.format(tmp=tmp_path) for part in command))
    assert out.exit_code == 1, out.output
    assert out.exception is None or isinstance(out.exception, SystemExit), out.exception
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(db) in lines[0], out.stderr
    assert ("Not a directory" if where == "under-a-file" else "No such file") in lines[0] \
        or "no store at" in lines[0], lines[0]
    assert not a_file.with_name("r").exists()


def test_init_under_a_file_prints_the_one_line_the_user_expects(tmp_path):
    a_file = tmp_path / "some_file"
    a_file.write_text("")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "ares_data.cli", "--db", str(a_file / "x.db"), "init"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1
    assert done.stderr == f"error: cannot create the store at {a_file / 'x.db'}: Not a directory\n"
    assert done.stdout == ""


def test_init_refuses_a_missing_folder_and_creates_it_only_when_asked(cli, tmp_path):
    db = tmp_path / "typo" / "dir" / "x.db"
    out = cli("--db", db, "init")
    assert out.exit_code == 1
    assert out.stderr.strip() == (f"error: cannot create the store at {db}: No such file or directory "
                                  f"(no folder {db.parent}; `ares init --parents` creates it)")
    assert not (tmp_path / "typo").exists()
    made = cli("--db", db, "init", "--parents")
    assert made.exit_code == 0, made.output
    assert db.is_file() and "applied 0001_initial" in made.stdout
    assert not (tmp_path / "typo2").exists()
    later = cli("--db", tmp_path / "typo2" / "x.db", "import", "example")  # only init makes folders
    assert later.exit_code == 1 and not (tmp_path / "typo2").exists()


def test_review_without_a_terminal_refuses_at_once_and_points_at_export(tmp_path, cli):
    assert cli("--db", tmp_path / "s.db", "init").exit_code == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ARES_DB": str(tmp_path / "s.db")}
    done = subprocess.run([sys.executable, "-m", "ares_data.cli", "review"], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, env=env, timeout=60)  # drew the UI until killed before
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "needs a terminal" in done.stderr and "ares review export" in done.stderr


def test_review_help_says_the_bare_command_opens_the_ui_and_lists_its_keys(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    out = cli("review", "--help")
    assert out.exit_code == 0
    assert "opens a full-screen UI" in out.stdout
    for key in ("up/down", "0-9", "ctrl+s", "n/p", "q quit"):
        assert key in out.stdout, key


def test_agreement_with_one_labeller_says_what_is_missing_also_in_json(cli, store, feedback):
    rollout = feedback.rollout(feedback.question(1), "Alpha is one. Beta is two. The answer is (A).")
    feedback.score(rollout, [0.2, 0.4, 0.9], model="gpt-4o")
    expected = "error: needs two labellers on shared sentences; found 1: gpt-4o"
    for flags in ((), ("--json",)):
        out = cli("agreement", *flags)
        assert out.exit_code == 1 and out.stdout == "", out.output
        assert out.stderr.startswith(expected) and out.stderr.count("\n") == 1, out.stderr
    other = feedback.rollout(feedback.question(2), "Gamma is three. The answer is (B).")
    feedback.score(other, [0.5, 0.5], model="claude")  # a second labeller, on other sentences
    out = cli("agreement", "--round", "1")
    assert "found 2 (claude, gpt-4o) but no sentence that two of them scored" in out.stderr


def test_a_fresh_status_shows_no_empty_table_and_says_what_to_do_next(cli, store):
    fresh = cli("status")
    assert fresh.exit_code == 0
    assert "┏" not in fresh.stdout  # no header-only tables
    assert "the store is empty; next: `ares import example`" in fresh.stdout
    assert cli("import", "example").exit_code == 0
    imported = cli("status")
    assert "Questions" in imported.stdout and "Stages of the latest" not in imported.stdout
    assert "| teacher_call" not in imported.stdout and "│ teacher_call" not in imported.stdout
    assert "next: `ares collect-scores --rationales gold --dry-run`" in imported.stdout
