"""`ares train`: the alternating loop through the CLI with a tiny student and the fake teacher."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ares_data.fake_teacher import serve_in_thread

pytestmark = pytest.mark.slow

QUESTIONS = 3
K = 2


def _loop_args(model_dir: Path, url: str, rounds: int) -> list[str]:
    return ["train", "--model", str(model_dir), "--rounds", str(rounds), "--k", str(K), "--limit", str(QUESTIONS),
            "--max-new-tokens", "24", "--base-url", url, "--teacher-model", "fake-teacher", "--concurrency", "1"]


def _import_questions(cli, tmp_path: Path) -> None:
    lines = [
        '{"id": "%d", "question": "Which is bigger, %d or %d?", "choices": ["%d", "%d"], "answer": 1, '
        '"rationale": "Compare the numbers. %d is more than %d. The answer is (B)."}'
        % (i, i, i + 1, i, i + 1, i + 1, i)
        for i in range(QUESTIONS)
    ]
    path = tmp_path / "toy.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert cli("import", "jsonl", path).exit_code == 0


def _rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute(sql).fetchall()


def _stats(url: str) -> dict:
    return httpx.get(url.removesuffix("/v1") + "/stats").json()


def test_two_rounds_chain_checkpoints_and_round_summary_is_exact(cli, tiny_model_dir, db_path, tmp_path):
    _import_questions(cli, tmp_path)
    with serve_in_thread(seed=1) as url:
        result = cli(*_loop_args(tiny_model_dir, url, rounds=2), "--seed", "3")
        assert result.exit_code == 0, result.output
        stats = _stats(url)
    assert stats["answered_twice"] == 0
    stages = _rows(db_path, "SELECT round, stage, status FROM pipeline_stage ORDER BY id")
    assert [s[2] for s in stages] == ["done"] * 16
    parents = dict(_rows(db_path, "SELECT c.name, p.name FROM model_checkpoint c "
                                  "JOIN model_checkpoint p ON p.id = c.parent_id"))
    assert parents["round-1-sft"] == "round-1-rl"
    assert parents["round-2-rl"] == "round-1-sft"  # round 2 starts from round 1's SFT checkpoint
    assert parents["round-2-sft"] == "round-2-rl"
    generated_by = _rows(db_path, "SELECT r.round, c.name, COUNT(*) FROM rationale r JOIN model_checkpoint c "
                                  "ON c.id = r.model_checkpoint_id WHERE r.source = 'student' "
                                  "GROUP BY r.round, c.name ORDER BY r.round, c.id")
    base = tiny_model_dir.name
    assert generated_by == [(1, base, QUESTIONS * K), (1, "round-1-rl", QUESTIONS * K),
                            (2, "round-1-sft", QUESTIONS * K), (2, "round-2-rl", QUESTIONS * K)]
    # v_round_summary against counts taken straight from the tables
    for rnd in (1, 2):
        (summary,) = _rows(db_path, f"SELECT rationales, sentences, scored_sentences, corrections, failures "
                                    f"FROM v_round_summary WHERE round = {rnd}")
        (sentences,) = _rows(db_path, f"SELECT COUNT(*) FROM sentence s JOIN rationale r ON r.id = s.rationale_id "
                                      f"WHERE r.round = {rnd} AND r.source = 'student'")
        (scored,) = _rows(db_path, f"SELECT COUNT(DISTINCT s.id) FROM sentence s JOIN rationale r "
                                   f"ON r.id = s.rationale_id JOIN model_checkpoint c ON c.id = r.model_checkpoint_id "
                                   f"WHERE r.round = {rnd} AND c.stage != 'rl'")
        assert summary == (2 * QUESTIONS * K, sentences[0], scored[0], QUESTIONS * K, 0)
    # the k rollouts of a question are scored in one grouped call, which v_teacher_calls counts per round
    assert _rows(db_path, "SELECT round, COUNT(*), MIN(rationales), MAX(rationales) FROM v_teacher_calls "
                          "WHERE kind = 'score' GROUP BY round ORDER BY round") == [(1, QUESTIONS, K, K),
                                                                                      (2, QUESTIONS, K, K)]
    runs = _rows(db_path, "SELECT kind, round, status FROM training_run ORDER BY id")
    assert runs == [("rl", 1, "done"), ("sft", 1, "done"), ("rl", 2, "done"), ("sft", 2, "done")]
    # round 2's critic starts from round 1's, and each RL run's forward reproduced its rollouts' log-probs
    (rl1_dir,) = _rows(db_path, "SELECT adapter_path FROM model_checkpoint WHERE name = 'round-1-rl'")
    metrics = [json.loads(m) for (m,) in _rows(db_path, "SELECT metrics FROM training_run WHERE kind = 'rl' "
                                                        "ORDER BY round")]
    assert [m["summary"]["critic_from"] for m in metrics] == [None, rl1_dir[0]]
    assert all(m["rollout_probs_diff_max"] < 1e-3 for m in metrics)
    status = cli("status")
    assert "train_sft" in status.stdout and "done" in status.stdout
    # evaluation of what the loop produced, through the CLI
    accuracy = cli("eval", "accuracy", "--checkpoint", "latest", "--split", "train", "--max-new-tokens", "16")
    assert accuracy.exit_code == 0, accuracy.output
    assert "round-2-sft" in accuracy.stdout
    assert _rows(db_path, "SELECT COUNT(*) FROM eval_result e JOIN model_checkpoint c ON c.id = e.model_checkpoint_id "
                          "WHERE e.kind = 'accuracy' AND c.name = 'round-2-sft'") == [(QUESTIONS,)]
    with serve_in_thread() as url:
        judged = cli("eval", "winrate", "--a", "round-2-sft", "--b", base, "--split", "train", "--max-new-tokens", "16",
                     "--base-url", url, "--model", "judge-first")
    assert judged.exit_code == 0, judged.output
    outcomes = _rows(db_path, "SELECT outcome, a_position FROM eval_result WHERE kind = 'winrate'")
    assert len(outcomes) == QUESTIONS and all((o == "win") == (p == "A") for o, p in outcomes)
    report = cli("report", "--out", tmp_path / "report")
    assert report.exit_code == 0 and (tmp_path / "report" / "accuracy.png").exists()


def test_killed_mid_round_then_rerun_repeats_no_teacher_call(cli, tiny_model_dir, db_path, tmp_path):
    _import_questions(cli, tmp_path)
    env = {**os.environ, "ARES_DB": str(db_path), "ARES_HOME": str(tmp_path / "home")}
    ares = [sys.executable, "-m", "ares_data.cli"]
    with serve_in_thread(seed=2, latency_ms=400) as url:
        command = [*ares, *_loop_args(tiny_model_dir, url, rounds=1)]
        first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and first.poll() is None:
            done = _rows(db_path, "SELECT COUNT(*) FROM teacher_call WHERE kind = 'correct' AND status = 'ok'") \
                if db_path.exists() else [(0,)]
            if done[0][0] >= 2:
                break
            time.sleep(0.05)
        assert first.poll() is None, "the run ended before it could be killed"
        first.send_signal(signal.SIGKILL)
        first.wait()
        before = _stats(url)["answered"]
        assert _rows(db_path, "SELECT status FROM pipeline_stage WHERE stage = 'correct'") == [("running",)]
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr[-2000:]
        stats = _stats(url)
    assert "train_rl: done before, reused" in second.stderr
    assert stats["answered_twice"] == 0  # no request was answered twice across the kill
    assert stats["answered"] > before
    assert _rows(db_path, "SELECT COUNT(*) FROM correction") == [(QUESTIONS * K,)]
    assert _rows(db_path, "SELECT COUNT(*) FROM training_run WHERE kind = 'rl'") == [(1,)]  # not trained twice
    assert [r[0] for r in _rows(db_path, "SELECT status FROM pipeline_stage")] == ["done"] * 8


def test_a_config_file_holds_the_flags_and_the_effective_config_is_stored(cli, tiny_model_dir, db_path, tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-loop-secret-4242")
    _import_questions(cli, tmp_path)
    config = tmp_path / "run.yaml"
    with serve_in_thread(seed=4) as url:
        config.write_text(f"model: {tiny_model_dir}\nrounds: 1\nk: 3\nlimit: 2\nmax-new-tokens: 12\n"
                          f"teacher:\n  base_url: {url}\n  model: fake-teacher\n  concurrency: 2\n"
                          f"device: cpu\ndtype: float32\nrl:\n  ppo_epochs: 1\nsft:\n  num_train_epochs: 1\n")
        result = cli("train", "--config", config, "--k", "1")  # a flag on the command line wins over the file
        assert result.exit_code == 0, result.output
    (stored,) = _rows(db_path, "SELECT config FROM pipeline_run")
    effective = json.loads(stored[0])
    assert (effective["k"], effective["limit"], effective["max_new_tokens"]) == (1, 2, 12)
    assert effective["teacher"]["model"] == "fake-teacher" and effective["teacher"]["concurrency"] == 2
    assert effective["rl"] == {"ppo_epochs": 1} and effective["sft"] == {"num_train_epochs": 1}
    assert (effective["device"], effective["dtype"], effective["rollout_engine"]) == ("cpu", "float32", "hf")
    assert _rows(db_path, "SELECT DISTINCT json_extract(config, '$.device') FROM training_run") == [("cpu",)]
    assert effective["teacher"]["api_key_env"] == "OPENAI_API_KEY"  # the variable's name, never its value
    assert not any(b"sk-loop-secret-4242" in p.read_bytes() for p in tmp_path.glob("ares.db*"))
    assert _rows(db_path, "SELECT COUNT(*) FROM rationale WHERE source = 'student' AND round = 1 "
                          "AND model_checkpoint_id = (SELECT id FROM model_checkpoint WHERE stage = 'base')") == [(2,)]
