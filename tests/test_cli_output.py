"""Listing commands: `--json` prints one JSON document; off a terminal, tables are not cut."""

from __future__ import annotations

import json

from ares_data.fake_teacher import serve_in_thread

from teacher_support import add_rationales

LONG = "openai/gpt-4o-2024-08-06-with-a-very-long-deployment-name-" + "x" * 40
TEXT = "Alpha is one. Beta is two. The answer is (A)."


def _two_teachers(feedback) -> None:
    rollout = feedback.rollout(feedback.question(1), TEXT)
    feedback.score(rollout, [0.2, 0.4, 0.9], model=LONG)
    feedback.score(rollout, [0.3, 0.4, 0.8], model=LONG + "-b")


def test_agreement_piped_shows_whole_teacher_names_and_json_has_every_pair(cli, store, feedback):
    _two_teachers(feedback)
    table = cli("agreement")  # CliRunner's stdout is not a terminal
    assert table.exit_code == 0, table.output
    assert LONG + "-b" in table.stdout and "…" not in table.stdout
    rows = json.loads(cli("agreement", "--json").stdout)
    assert [(r["labeller_a"], r["labeller_b"], r["shared_sentences"]) for r in rows] == [(LONG, LONG + "-b", 3)]


def test_status_json_is_one_document_of_every_table(cli, store, feedback):
    _two_teachers(feedback)
    doc = json.loads(cli("status", "--json").stdout)
    assert {row["table"]: row["rows"] for row in doc["Tables"]} == store.table_counts()
    assert len(doc) > 1 and all(isinstance(rows, list) for rows in doc.values())


def test_sql_table_off_a_terminal_keeps_long_values(cli, store):
    wide = "y" * 300
    out = cli("sql", f"SELECT '{wide}' AS a, '{wide}' AS b")
    assert out.exit_code == 0 and out.stdout.count(wide) == 2


def test_collect_scores_json_is_the_summary(cli, store):
    add_rationales(store, 3)
    with serve_in_thread() as url:
        out = cli("collect-scores", "--round", "1", "--base-url", url, "--model", "fake", "--json")
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert (summary["kind"], summary["selected"], summary["done"]) == ("score", 3, 3)
    assert store.query_readonly("SELECT COUNT(*) FROM teacher_call WHERE status = 'ok'")[1] == [(summary["calls"],)]
    assert summary["calls"] >= 1 and summary["failed"] == {}


def test_teacher_model_is_one_spelling_on_every_teacher_command(cli, store, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # help lines in full
    add_rationales(store, 2)
    with serve_in_thread() as url:
        out = cli("collect-scores", "--round", "1", "--base-url", url, "--teacher-model", "fake-teacher-7")
    assert out.exit_code == 0, out.output
    assert store.query_readonly("SELECT DISTINCT model FROM teacher_call")[1] == [("fake-teacher-7",)]
    for command in (["collect-scores"], ["collect-corrections"], ["batch", "status"], ["eval", "winrate"], ["train"]):
        assert "--teacher-model" in cli(*command, "--help").stdout, command


def test_a_student_flag_given_a_teacher_name_says_so(cli, store):
    for command in (["train", "--model", "gpt-4o"], ["generate", "--round", "1", "--model", "openai/o3-mini"],
                    ["train", "sft", "--round", "1", "--model", "claude-3-5-haiku-latest"]):
        out = cli(*command)
        assert out.exit_code == 1, command
        (line,) = out.stderr.strip().splitlines()
        assert "names the student" in line and "--teacher-model" in line, line
