"""The edges of the online teacher path, against the fake teacher over loopback HTTP: a lease
heartbeat that outlives a failed renewal, keys echoed by the server, a Retry-After that would
stall every collector, and rationales that try to speak to the judge."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import event
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
