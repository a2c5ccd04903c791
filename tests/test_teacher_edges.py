"""The edges of the online teacher path, against the fake teacher over loopback HTTP: a lease
heartbeat that outlives a failed renewal, keys echoed by the server, a Retry-After that would
stall every collector, and rationales that try to speak to the judge."""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from dataclasses import replace

import httpx
import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from ares_data.fake_teacher import serve_in_thread
from ares_data.teacher import TeacherConfig
from ares_data.teacher.claims import Claim, Claims
from ares_data.teacher.collect import CollectRequest, collect
from teacher_support import add_rationales


def stats(url: str) -> dict:
    return httpx.get(url.removesuffix("/v1") + "/stats").json()


def teacher(url: str, **options) -> TeacherConfig:
    return TeacherConfig.from_options(base_url=url, model="fake", concurrency=1, **options)


@pytest.mark.both_backends
def test_the_heartbeat_keeps_renewing_after_a_failed_renewal(store):
    """A renewal that fails (here the store refuses the first one) must not end the heartbeat:
    with a 0.3 s lease and a 1.5 s call, the lease is renewed all along, so another collector
    looking at the rationale mid-call finds it busy and does not pay for it again."""
    [rid] = add_rationales(store, 1)
    renewals = {"tried": 0}

    def refuse_the_first_renewal(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("UPDATE WORK_CLAIM SET EXPIRES_AT"):
            renewals["tried"] += 1
            if renewals["tried"] == 1:
                raise OperationalError(statement, {}, Exception("the store is unreachable"))

    event.listen(store.engine, "before_cursor_execute", refuse_the_first_renewal)
    other = Claims(store, "score", "x", lambda session, rationale_id: True, lease_s=0.3)

    async def run() -> tuple[object, Claim]:
        request = CollectRequest("score", round=1, lease_s=0.3)
        collecting = asyncio.create_task(collect(store, teacher(url), request))
        await asyncio.sleep(1.0)  # mid-call, long after the first lease would have run out
        [key] = store.query_readonly("SELECT teacher FROM work_claim")[1]
        other.teacher = key[0]  # the same (kind, rationale, teacher) key as the collector's
        seen = await asyncio.to_thread(other.take, rid)
        return await collecting, seen

    with serve_in_thread(latency_ms=1500) as url:
        summary, seen_by_other = asyncio.run(run())
        answered = stats(url)["answered"]
    event.remove(store.engine, "before_cursor_execute", refuse_the_first_renewal)
    assert summary.done == 1 and answered == 1
    assert renewals["tried"] >= 5  # about one every 0.1 s; a heartbeat that died after one error: 1
    assert seen_by_other is Claim.busy  # still held mid-call: not taken over and paid again


@pytest.mark.both_backends
def test_a_key_echoed_in_an_error_body_never_reaches_the_store_in_any_part(store, monkeypatch):
    """The server quotes the key in its 400 and 500 bodies, past where an error is cut to one
    line: the key is redacted before the cut, so no piece of it is stored (nor printed)."""
    key = "sk-" + secrets.token_hex(96)  # long enough to straddle the 200-character cut
    monkeypatch.setenv("OPENAI_API_KEY", key)
    add_rationales(store, 2)
    with serve_in_thread(api_key=key, echo_key=True, fault_rate=1.0, faults=("500",),
                         reject={"Sample 0.": "content_policy_violation"}) as url:
        summary = asyncio.run(collect(store, teacher(url, max_attempts=2), CollectRequest("score", round=1)))
    assert summary.failed == {"rejected": 1, "error": 1}  # a 400 refusal, and 500s until it gave up
    _, rows = store.query_readonly("SELECT error FROM teacher_attempt UNION ALL SELECT error FROM teacher_call")
    errors = [row[0] for row in rows if row[0]]
    assert len(errors) >= 3 and all("authorization: Bearer ***" in e for e in errors), errors
    pieces = {key[i:i + 8] for i in range(len(key) - 8)}
    assert not [e for e in errors if any(piece in e for piece in pieces)]


@pytest.mark.both_backends
@pytest.mark.parametrize("retry_after", ["inf", "86400"])
def test_an_endless_retry_after_pauses_the_account_at_most_the_cap(store, retry_after):
    """A 429 saying `Retry-After: inf` (or a day) pauses every collector of the account at most
    --max-retry-after, in the shared row too; a row an older version left paused for ever is cut
    back on the next run."""
    add_rationales(store, 4)
    config = teacher("", rpm=600, max_retry_after=1)  # faster than the server's 60 RPM: it answers 429

    async def within(seconds: float, request: CollectRequest, url: str):
        return await asyncio.wait_for(collect(store, replace(config, base_url=url), request), seconds)

    with serve_in_thread(rpm=60, ratelimit_headers=False, retry_after=retry_after) as url:
        summary = asyncio.run(within(30, CollectRequest("score", round=1, limit=3), url))
        seen = stats(url)
        [[paused_until]] = store.query_readonly("SELECT paused_until FROM teacher_rate_bucket")[1]
        assert summary.done == 3 and seen["by_status"].get("429", 0) >= 1
        assert math.isfinite(paused_until) and paused_until <= time.time() + 1
        with store.engine.begin() as conn:  # as an uncapped pause left it
            conn.execute(text("UPDATE teacher_rate_bucket SET paused_until = 1e300"))
        assert asyncio.run(within(10, CollectRequest("score", round=1), url)).done == 1
