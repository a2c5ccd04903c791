"""Several collectors on one store (SQLite and PostgreSQL) share the work through leases."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from ares_data.fake_teacher import serve_in_thread
from ares_data.store import Store
from ares_data.tables import WorkClaim, utcnow
from ares_data.teacher.claims import Claim, Claims, dead_here

from teacher_support import add_rationales

ARES = [sys.executable, "-c", "from ares_data.cli import main; main()"]
N = 24


def _collector(url: str, db_url: str, concurrency: int) -> subprocess.Popen:
    env = {**os.environ, "ARES_DB": db_url, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen([*ARES, "collect-scores", "--round", "1", "--no-group-by-question",
                             "--base-url", url, "--model", "fake",
                             "--concurrency", str(concurrency), "--rpm", "60000", "--lease", "2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _claims_of(store: Store, pid: int) -> list[int]:
    return [r[0] for r in store.query_readonly("SELECT rationale_id FROM work_claim WHERE worker LIKE :w",
                                               {"w": f"%:{pid}:%"})[1]]


@pytest.mark.slow  # among the longest of `make test` (--durations); CI runs it in `make test-slow`
@pytest.mark.both_backends
def test_two_collectors_share_the_work_and_the_survivor_takes_over(store, db_url):
    add_rationales(store, N)
    with serve_in_thread(latency_ms=300) as url:
        doomed, survivor = _collector(url, db_url, 1), _collector(url, db_url, 2)
        try:
            # Kill the first collector just after it claimed a new rationale, so its one request
            # is in flight, not answered: a kill between answer and commit would cost a re-ask.
            seen: set[int] = set()
            deadline = time.monotonic() + 60
            while len(seen) < 4 and time.monotonic() < deadline and doomed.poll() is None:
                seen.update(_claims_of(store, doomed.pid))
                time.sleep(0.01)
            held = _claims_of(store, doomed.pid)
            doomed.send_signal(signal.SIGKILL)  # not reaped yet: its pid looks alive, so its lease must expire
            assert len(seen) >= 4 and held, "the first collector never got going"
            out, err = survivor.communicate(timeout=120)
        finally:
            for proc in (doomed, survivor):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        stats = httpx.get(url.removesuffix("/v1") + "/stats").json()
    assert survivor.returncode == 0, err
    assert "answered by another collector" in out  # what the dead one finished before dying
    assert stats["answered_twice"] == 0 and stats["answered"] == N
    per_sentence = store.query_readonly("SELECT s.id, COUNT(ss.id) FROM sentence s "
                                        "LEFT JOIN sentence_score ss ON ss.sentence_id = s.id GROUP BY s.id")[1]
    assert per_sentence and all(n == 1 for _, n in per_sentence)
    assert store.query_readonly("SELECT COUNT(*) FROM work_claim")[1] == [(0,)]  # the dead one's lease was taken


def _expire(store: Store, claims: Claims) -> None:
    with store.session() as s:
        s.execute(update(WorkClaim).where(WorkClaim.worker == claims.worker).values(expires_at=utcnow()))


@pytest.mark.both_backends
def test_a_live_lease_is_exclusive_and_an_expired_one_is_taken_over(store):
    (rid,) = add_rationales(store, 1)
    is_open = {"open": True}
    first = Claims(store, "score", "fake|v1", lambda s, r: is_open["open"], lease_s=60)
    second = Claims(store, "score", "fake|v1", lambda s, r: is_open["open"], lease_s=60)
    other_teacher = Claims(store, "score", "other|v1", lambda s, r: True, lease_s=60)
    assert first.take(rid) is Claim.taken
    assert second.take(rid) is Claim.busy
    assert other_teacher.take(rid) is Claim.taken  # another teacher's answer is other work
    assert first.renew() == 1 and second.take(rid) is Claim.busy  # renewed: still the first's
    _expire(store, first)  # the first collector stopped renewing (it died): its lease ran out
    assert second.take(rid) is Claim.taken
    second.release(rid)
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    crashed = Claims(store, "score", "fake|v1", lambda s, r: True, lease_s=60)
    crashed.worker = crashed.worker.replace(f":{os.getpid()}:", f":{ended.pid}:")
    assert dead_here(crashed.worker) and not dead_here(first.worker)
    assert crashed.take(rid) is Claim.taken
    assert first.take(rid) is Claim.taken  # its process is gone on this machine: no need to wait the lease
    first.release(rid)
    is_open["open"] = False  # answered meanwhile: a claim finds nothing to do, and holds nothing
    assert first.take(rid) is Claim.done
    assert store.query_readonly("SELECT worker FROM work_claim WHERE teacher = 'fake|v1'")[1] == []
