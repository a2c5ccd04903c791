"""Audit of what the teacher was asked and billed: every attempt with its outcome (a read timeout
after the provider answered included), request ids, model snapshots, and no credentials stored."""

import asyncio

import httpx
import pytest

from ares_data.fake_teacher import serve_in_thread
from ares_data.teacher import TeacherConfig, collect_scores
from ares_data.teacher.config import redact_url
from teacher_support import add_rationales


def test_a_read_timeout_after_the_answer_shows_as_retried_spend(store):
    add_rationales(store, 2)
    with serve_in_thread(answered_timeouts=1) as url:
        config = TeacherConfig.from_options(base_url=url, model="fake", rpm=6000, timeout=0.5, concurrency=1,
                                            price_in=1.0, price_out=2.0)
        summary = asyncio.run(collect_scores(store, config, round=1, group_by_question=False))
        seen = httpx.get(url.removesuffix("/v1") + "/stats").json()
    assert summary.done == 2 and seen["answered_twice"] == 1  # the provider answered (billed) one request twice
    attempts = store.query_readonly(
        "SELECT a.teacher_call_id, a.attempt, a.outcome, a.request_id, a.model_snapshot, a.cost_usd, a.est_cost_usd "
        "FROM teacher_attempt a ORDER BY a.teacher_call_id, a.attempt")[1]
    assert [(n, outcome) for _, n, outcome, *_ in attempts] == [(1, "timeout"), (2, "ok"), (1, "ok")]
    timed_out, retried, other = attempts
    assert timed_out[3] is None and timed_out[5] is None and timed_out[6] > 0  # no answer read: bounded, not priced
    assert retried[3].startswith("req_fake_") and retried[4] == "fake-fake-0001" and retried[5] > 0
    calls = store.query_readonly("SELECT id, attempts, request_id, model_snapshot, cost_usd FROM teacher_call "
                                 "ORDER BY id")[1]
    assert [(c[1], c[2], c[3]) for c in calls] == [(2, retried[3], "fake-fake-0001"), (1, other[3], "fake-fake-0001")]
    spend = store.query_readonly("SELECT calls, attempts, retried_attempts, timeouts, answered_usd, unread_usd_max "
                                 "FROM v_teacher_spend")[1]
    assert spend[0][:4] == (2, 3, 1, 1)
    assert spend[0][4] == pytest.approx(sum(c[4] for c in calls)) and spend[0][5] == pytest.approx(timed_out[6])


def test_credentials_in_urls_are_not_stored():
    config = TeacherConfig.from_options(base_url="https://user:s3cret@llm.example/v1?api-key=k3y&deployment=x")
    described = config.describe()
    assert "s3cret" not in str(described) and "k3y" not in str(described)
    assert described["base_url"] == "https://user:***@llm.example/v1?api-key=***&deployment=x"
    assert redact_url("https://sk-abc@llm.example/v1") == "https://***@llm.example/v1"
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
