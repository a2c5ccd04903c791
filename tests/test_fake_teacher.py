"""The fake teacher: OpenAI SDK compatibility, deterministic answers, stats, and a SIGKILL resume."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from ares_data.fake_answers import sentence_score
from ares_data.fake_teacher import serve_in_thread
from ares_data.store import Store
from ares_data.teacher.prompts import score_ask

from servers import free_port, running
from teacher_support import add_rationales

ARES = [sys.executable, "-c", "from ares_data.cli import main; main()"]


class _Q:
    id, question, choices, answer_index, hint, caption, image_path = 1, "Which?", ["x", "y"], 0, "", "", None


def test_the_openai_sdk_talks_to_it():
    from openai import OpenAI

    ask = score_ask(_Q(), ["First one.", "Second one."])
    with serve_in_thread(rpm=600) as url:
        client = OpenAI(base_url=url, api_key="sk-fake", max_retries=0)
        reply = client.chat.completions.create(
            model="fake", messages=[{"role": "system", "content": ask.system},
                                    {"role": "user", "content": ask.parts}],
            response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": ask.schema}})
        again = client.chat.completions.create(
            model="fake", messages=[{"role": "system", "content": ask.system},
                                    {"role": "user", "content": ask.parts}])
        assert [m.id for m in client.models.list()] == ["fake"]
        stats = httpx.get(url.removesuffix("/v1") + "/stats").json()
    assert json.loads(reply.choices[0].message.content) == {"scores": [sentence_score("First one."),
                                                                        sentence_score("Second one.")]}
    assert reply.usage.prompt_tokens > 0
    assert again.choices[0].message.content == reply.choices[0].message.content
    assert stats["by_status"]["200"] == 2 and stats["answered_twice"] == 0  # the two bodies differ


def test_it_counts_identical_requests_answered_twice_and_enforces_rpm():
    body = {"model": "fake", "messages": [{"role": "user", "content": "hello"}]}
    with serve_in_thread(rpm=60) as url:
        first = httpx.post(url + "/chat/completions", json=body)
        second = httpx.post(url + "/chat/completions", json=body)
        stats = httpx.get(url.removesuffix("/v1") + "/stats").json()
    assert first.status_code == 200 and second.status_code == 429
    assert 0 < float(second.headers["retry-after-ms"]) <= 1001 and second.headers["retry-after"] == "1"
    assert stats["by_status"] == {"200": 1, "429": 1} and stats["answered_twice"] == 0


def _ok_calls(db: Path) -> int:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        try:
            return con.execute("SELECT COUNT(*) FROM teacher_call WHERE status = 'ok'").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_scores_every_sentence_once(tmp_path):
    db = tmp_path / "kill.db"
    with Store(db) as store:
        add_rationales(store, 40)
    port = free_port()
    env = {**os.environ, "ARES_DB": str(db), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    server = subprocess.Popen([*ARES, "fake-teacher", "--port", str(port), "--latency-ms", "300"], env=env,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(url + "/stats")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        run = [*ARES, "collect-scores", "--round", "1", "--no-group-by-question",
               "--base-url", url + "/v1", "--model", "fake",
               "--concurrency", "4", "--rpm", "6000", "--timeout", "10"]
        first = subprocess.Popen(run, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # The 4 workers' calls travel together (one every 10 ms, 300 ms latency): kill 150 ms after
        # the 10th answer is committed, while the next calls are mid-flight. A kill in the few ms
        # between an answer arriving and its commit would lose that answer: that is what
        # "at most the calls in flight" means, and it is not what this test is about.
        deadline = time.monotonic() + 60
        while _ok_calls(db) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.15)
        first.send_signal(signal.SIGKILL)
        first.wait()
        with Store(db) as store:
            saved = store.query_readonly("SELECT COUNT(*) FROM teacher_call WHERE status = 'ok'")[1][0][0]
        assert 10 <= saved < 40
        second = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 0, second.stderr
        assert f"scored {40 - saved} of {40 - saved}" in second.stdout
        stats = httpx.get(url + "/stats").json()
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
    assert stats["answered_twice"] == 0
    with Store(db) as store:
        per_sentence = store.query_readonly(
            "SELECT s.id, COUNT(ss.id) FROM sentence s LEFT JOIN sentence_score ss ON ss.sentence_id = s.id "
            "GROUP BY s.id")[1]
        ok_calls = store.query_readonly("SELECT COUNT(*) FROM teacher_call WHERE status = 'ok'")[1][0][0]
    assert per_sentence and all(n == 1 for _, n in per_sentence)
    assert ok_calls == 40 == stats["answered"]


def test_the_cli_logs_every_request_and_its_answer_as_json_lines(cli, store, tmp_path):

    add_rationales(store, 3)
    port, log = free_port(), tmp_path / "requests.jsonl"
    argv = [sys.executable, "-m", "ares_data.cli", "fake-teacher", "--port", str(port), "--log", str(log)]
    with running(argv, f"http://127.0.0.1:{port}/v1/models", tmp_path / "fake.log"):
        out = cli("collect-scores", "--round", 1, "--base-url", f"http://127.0.0.1:{port}/v1", "--model", "fake",
                  "--no-group-by-question")
    assert out.exit_code == 0, out.output
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    stored = store.query_readonly("SELECT request FROM teacher_call ORDER BY id")[1]
    assert len(lines) == len(stored) == 3
    for line, (request,) in zip(lines, stored):
        assert line["status"] == 200 and line["request"]["messages"] == json.loads(request)["messages"]
        assert json.loads(line["response"]["choices"][0]["message"]["content"])  # the answer the store parsed
