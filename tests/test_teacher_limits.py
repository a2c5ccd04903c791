"""The teacher as providers behave: one limit per account shared by every collector on a store,
limits learned from OpenAI- and Anthropic-style headers, reasoning models, timeouts."""

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ares_data.fake_teacher import serve_in_thread
from ares_data.teacher import TeacherConfig, collect_scores
from ares_data.teacher.client import TeacherClient, build_request
from ares_data.teacher.prompts import score_ask
from ares_data.teacher.ratelimit import BucketState, Seen, learned, pace, refund, reserve
from teacher_support import add_rationales

ARES = [sys.executable, "-c", "from ares_data.cli import main; main()"]


def stats(url):
    return httpx.get(url.removesuffix("/v1") + "/stats").json()


def test_headers_of_both_providers_are_read():
    openai = learned({"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "499",
                      "x-ratelimit-reset-requests": "120ms", "x-ratelimit-limit-tokens": "200000",
                      "x-ratelimit-remaining-tokens": "150000", "x-ratelimit-reset-tokens": "15s"})
    assert openai == {"requests": Seen(500, 499, 0.12), "tokens": Seen(200000, 150000, 15.0)}
    anthropic = learned({"anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-requests-remaining": "0",
                         "anthropic-ratelimit-requests-reset": "2026-01-01T00:00:03Z",
                         "anthropic-ratelimit-input-tokens-limit": "40000",
                         "anthropic-ratelimit-input-tokens-remaining": "10000"}, now=1767225600.0)
    assert anthropic == {"requests": Seen(50, 0, 3.0), "tokens": Seen(40000, 10000, None)}
    assert learned({"x-ratelimit-limit-requests": "many", "x-ratelimit-remaining-requests": "1"}) == {}


def test_the_pace_falls_smoothly_with_the_remaining_budget():
    paces = [pace(Seen(600, remaining, None)) for remaining in (600, 300, 240, 150, 90, 0)]
    assert paces[:2] == [570, 570]  # half the budget or more left: the limit, less a 5 % margin
    assert paces[2] > paces[3] > paces[4] > paces[5] > 0  # then in proportion, never stopping
    assert paces[3] == pytest.approx(285) and paces[5] == pytest.approx(570 / 4)


def test_given_limits_are_never_exceeded_even_when_the_provider_allows_more():
    state = BucketState(rpm=6000, tpm=10_000_000)  # learned: far above what was given
    starts = [reserve(state, 1000, now=100.0, rpm=60, tpm=None) for _ in range(5)]
    assert [b - a for a, b in zip(starts, starts[1:])] == [1.0] * 4
    tokens = BucketState()
    at = [reserve(tokens, 600, now=0.0, tpm=1200) for _ in range(4)]  # a minute's bucket holds 2 requests
    assert at == [0.0, 0.0, 30.0, 60.0]
    refund(tokens, 600, 1200)  # the last request used none of its reservation
    assert reserve(tokens, 600, now=0.0, tpm=1200) == 60.0


def test_a_reasoning_model_gets_max_completion_tokens_and_no_temperature():
    ask = score_ask(_question(), ["One.", "Two."])
    body, _ = build_request(TeacherConfig(model="o4-mini"), ask)
    assert body["max_completion_tokens"] == 1024 and "max_tokens" not in body and "temperature" not in body
    body, _ = build_request(TeacherConfig(model="my-proxy-name", reasoning=True), ask)
    assert "temperature" not in body
    body, _ = build_request(TeacherConfig(model="o4-mini", reasoning=False), ask)
    assert body["max_tokens"] == 1024 and body["temperature"] == 0


def _question():
    from ares_data.tables import Question

    return Question(dataset="d", source_id="1", split="train", question="Which?", choices=["a", "b"],
                    answer_index=0)


def test_a_reasoning_model_answers_and_its_thinking_is_counted():
    async def ask(config):
        body, _ = build_request(config, score_ask(_question(), ["One.", "Two."]))
        async with TeacherClient(config) as client:
            return await client.send(body)

    with serve_in_thread() as url:
        reply = asyncio.run(ask(TeacherConfig.from_options(base_url=url, model="o4-mini")))
        with pytest.raises(Exception, match="HTTP 400.*max_tokens.*add --reasoning"):
            asyncio.run(ask(TeacherConfig.from_options(base_url=url, model="o4-mini", reasoning=False)))
    assert reply.reasoning_tokens == 64 and reply.tokens_out > 64
    assert reply.model_snapshot == "o4-mini-fake-0001" and reply.request_id.startswith("req_fake_")
    assert "\"scores\"" in reply.text


@pytest.mark.parametrize("style", ["openai", "anthropic"])
def test_limits_learned_from_the_headers_hold_the_server_without_429(store, style):
    """No --rpm: the first answer's headers give the limit, and the client paces to it."""
    add_rationales(store, 8)
    with serve_in_thread(rpm=240, ratelimit_style=style) as url:
        config = TeacherConfig.from_options(base_url=url, model="fake", concurrency=8, timeout=5)
        started = time.monotonic()
        summary = asyncio.run(collect_scores(store, config, round=1, group_by_question=False))
        elapsed = time.monotonic() - started
        seen = stats(url)
    assert summary.done == 8 and "429" not in seen["by_status"]
    assert elapsed >= 6 * 60 / 240  # about one request every 0.25 s after the first


def _collector(url: str, db: str, rpm: int) -> subprocess.Popen:
    env = {**os.environ, "ARES_DB": db, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen([*ARES, "collect-scores", "--round", "1", "--no-group-by-question", "--base-url", url,
                             "--model", "fake", "--concurrency", "4", "--rpm", str(rpm), "--timeout", "10"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_three_collectors_with_the_same_rpm_hold_it_together(store, db_path):
    """Each is told the account's --rpm; together they stay under it. Each holding it alone, 33 of
    57 requests were answered 429; shared, 0-2 of ~25 on a busy machine (the fake's limit is one
    second deep at 120 RPM: two requests, so a stall of the machine bunches them): the 2 % bound
    over 300 requests is measured in benchmarks/teacher_throughput.py (docs/benchmarks.md)."""
    add_rationales(store, 24)
    with serve_in_thread(rpm=120, ratelimit_headers=False) as url:
        procs = [_collector(url, str(db_path), 120) for _ in range(3)]
        try:
            results = [p.communicate(timeout=120) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        seen = stats(url)
    assert all(p.returncode == 0 for p in procs), [err for _, err in results]
    assert seen["answered"] == 24
    assert seen["by_status"].get("429", 0) <= 0.1 * seen["requests"], seen
