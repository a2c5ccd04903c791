"""Issue 25: where the Batch API meets other commands, every answer is paid once and stored.

Against the fake teacher on 127.0.0.1 (its batch endpoints, a refused request, a refused batch
creation); overlapping commands run as coroutines of one event loop, each with its own claims
(its own worker id), so the interleaving is the same on every run. Tests that touch the store
run on SQLite and PostgreSQL. The last test runs the mixes together and checks the invariant of
docs/sql.md with the SQL written there.
"""

import asyncio
import dataclasses
import re
import threading
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import select

from ares_data.enums import AttemptOutcome
from ares_data.errors import InvalidAnswer, TeacherError
from ares_data.fake_teacher import serve_in_thread
from ares_data.store import Store
from ares_data.tables import Sentence, TeacherBatch, utcnow
from ares_data.teacher import collect_scores
from ares_data.teacher.batch import BatchApi, BatchLimits, ingest, status
from ares_data.teacher.calls import CallRunner, online
from ares_data.teacher.claims import Claims
from ares_data.teacher.client import Attempt, Reply, TeacherClient
from ares_data.teacher.collect import CollectRequest, collect
from ares_data.teacher.tasks import jobs_of, score_task
from teacher_support import add_rationales
from teacher_support import fake_config as _config
from teacher_support import fake_stats as _stats
from teacher_support import sql_rows as _q

SAME = "Magnets attract iron. The nail is iron. The answer is (A)."
REFUSED = {"HUGE": "context_length_exceeded"}


def _scores(store, config, **options):
    return asyncio.run(collect_scores(store, config, round=1, **options))


def _batch(store, config, **options):
    return _scores(store, config, batch=BatchLimits(), **options)


def _refuse(store, rationale_id: int) -> None:
    """The provider refuses any request holding this rationale (its first sentence gets the marker)."""
    with store.session() as s:
        first = s.exec(select(Sentence).where(Sentence.rationale_id == rationale_id).order_by(Sentence.idx)).first()
        first.text = "HUGE " + first.text
        s.add(first)


def _identical(store, n: int) -> list[int]:
    from ares_data.tables import Question

    with store.session() as s:
        q = Question(dataset="t", source_id="same", split="train", question="Which is iron?",
                     choices=["nail", "wood"], answer_index=0)
        s.add(q)
        s.flush()
        return [store.add_rationale(s, question_id=q.id, source="student", text=SAME, dedup_key=f"same:{i}",
                                    round=1, sample_index=i)[0].id for i in range(n)]


async def _together(*runs):
    return await asyncio.gather(*runs)


@pytest.mark.both_backends
def test_two_overlapping_batch_submissions_put_each_rationale_in_one_batch(store):
    """Item 1: the second submission waits for the first one's claims, then finds them in its batch."""
    add_rationales(store, 10)
    with serve_in_thread(latency_ms=200) as url:
        config = _config(url)
        runs = [collect_scores(store, config, round=1, batch=BatchLimits(), lease_s=5, group_by_question=False)
                for _ in range(2)]
        first, second = asyncio.run(_together(*runs))
        per_rationale = _q(store, "SELECT rationale_id, COUNT(*) FROM teacher_batch_request GROUP BY rationale_id")
        done = asyncio.run(ingest(store, config))
        stats = _stats(url)
    assert first.requests + second.requests == 10
    assert len(per_rationale) == 10 and {n for _, n in per_rationale} == {1}
    assert done.ok == 10 and stats["answered"] == 10 and stats["answered_twice"] == 0


@pytest.mark.both_backends
def test_two_status_calls_on_one_creating_row_create_one_batch(store):
    """Item 1: creating the remote batch of a `creating` row is one process's job."""
    add_rationales(store, 2)
    with serve_in_thread(latency_ms=300) as url:
        config = _config(url)

        async def upload() -> str:
            async with BatchApi(config) as api:
                return await api.upload(b"", "empty.jsonl")

        with store.session() as s:
            s.add(TeacherBatch(provider="openai", model="fake", kind="score", prompt_name="score_v1",
                               prompt_version="v1", remote_id="creating:k-1", input_file_id=asyncio.run(upload()),
                               status="creating", request_count=0, ares_key="k-1"))
        asyncio.run(_together(status(store, config), status(store, config)))
        rows = asyncio.run(status(store, config))
        assert _stats(url)["batches"] == 1
    assert [r.remote_id for r in rows] == ["batch_fake_0"]


@pytest.mark.both_backends
def test_an_online_run_leaves_rationales_in_open_batches_alone(store):
    """Item 2: a batch, then an online run, then ingest: each rationale is paid once."""
    add_rationales(store, 6)
    with serve_in_thread() as url:
        config = _config(url)
        submitted = _batch(store, config, group_by_question=False)
        meanwhile = _scores(store, config, group_by_question=False)
        done = asyncio.run(ingest(store, config))
        stats = _stats(url)
    assert submitted.requests == 6 and (meanwhile.selected, meanwhile.calls, meanwhile.in_batches) == (0, 0, 6)
    assert "6 rationales waiting in batches" in " ".join(meanwhile.lines())
    assert done.ok == 6 and stats["answered"] == 6 and stats["answered_twice"] == 0


@pytest.mark.both_backends
def test_an_identical_rationale_waits_for_the_batch_that_holds_its_request(store):
    """Item 2: the request (by hash) of a rationale is in an open batch for another rationale."""
    first, second = _identical(store, 2)
    with serve_in_thread() as url:
        config = _config(url)
        asyncio.run(collect(store, config, CollectRequest("score", only=(first,), batch=BatchLimits())))
        meanwhile = _scores(store, config, group_by_question=False)
        asyncio.run(ingest(store, config))
        after = _scores(store, config, group_by_question=False)
        stats = _stats(url)
    assert (meanwhile.calls, meanwhile.in_batches) == (0, 2)  # one by rationale, one by request
    assert (after.done, after.calls, after.reused) == (1, 0, 1)
    assert stats["answered"] == 1
    assert sorted(r for (r,) in _q(store, "SELECT rationale_id FROM v_call_rationale")) == [first, second]


@pytest.mark.both_backends
def test_a_request_already_in_an_open_batch_is_not_submitted_again(store):
    """Item 1: an identical rationale's request joins the open batch line instead of a second line."""
    first, second = _identical(store, 2)
    with serve_in_thread() as url:
        config = _config(url)
        asyncio.run(collect(store, config, CollectRequest("score", only=(first,), batch=BatchLimits())))
        again = _batch(store, config, group_by_question=False)
        done = asyncio.run(ingest(store, config))
        stats = _stats(url)
    assert again.requests == 0 and done.ok == 2 and stats["answered"] == 1
    assert sorted(r for (r,) in _q(store, "SELECT rationale_id FROM v_call_rationale")) == [first, second]


@pytest.mark.both_backends
def test_batch_answers_to_requests_answered_online_meanwhile_are_kept(store):
    """Item 2: a store where an online run did not see the open batch (as before issue 25): the
    batch's answers, paid too, join the stored calls as attempts, so SQL sees the spend."""
    add_rationales(store, 4)
    with serve_in_thread() as url:
        config = _config(url, price_in=1.0, price_out=2.0)
        _batch(store, config, group_by_question=False)
        with store.session() as s:
            s.execute(update(TeacherBatch).values(ingested_at=utcnow()))
        _scores(store, config, group_by_question=False)
        with store.session() as s:
            s.execute(update(TeacherBatch).values(ingested_at=None))
        done = asyncio.run(ingest(store, config))
        stats = _stats(url)
    assert stats["answered"] == 8 and (done.ok, done.duplicates) == (4, 4)
    assert _q(store, "SELECT COUNT(*) FROM teacher_call") == [(4,)]
    assert _q(store, "SELECT COUNT(*) FROM teacher_attempt WHERE outcome = 'ok'") == [(8,)]
    assert _q(store, "SELECT COUNT(*) FROM teacher_attempt WHERE outcome = 'ok' AND cost_usd > 0") == [(8,)]


@pytest.mark.both_backends
def test_ingest_reads_answers_with_the_prompt_they_were_asked_with(store):
    """Item 3: submitted with --score-from logprobs, ingested without it: scored as submitted."""
    add_rationales(store, 4)
    with serve_in_thread() as url:
        _batch(store, _config(url, score_from="logprobs"), group_by_question=False)
        done = asyncio.run(ingest(store, _config(url)))
        again = _batch(store, _config(url, score_from="logprobs"), group_by_question=False)
    assert (done.ok, done.failed, done.deferred) == (4, 0, 0) and again.requests == 0
    assert _q(store, "SELECT DISTINCT status, prompt_name FROM teacher_call") == [("ok", "score_points_v1")]
    assert _q(store, "SELECT COUNT(*) FROM sentence") == _q(store, "SELECT COUNT(*) FROM sentence_score")


def test_a_stored_invalid_answer_that_passes_now_writes_its_scores(store):
    """Item 3: a stored answer judged invalid (as with another prompt's parser) and reused by a task
    that reads it as valid: its scores are written and the call becomes ok."""
    (rid,) = add_rationales(store, 1)
    with store.session() as s:
        [job] = jobs_of(s, [rid])

    def strict(text: str):
        raise InvalidAnswer("wrong_count", "read with the wrong parser")

    async def never(body, key):
        raise AssertionError("asked again")

    with serve_in_thread() as url:
        config = _config(url, max_repairs=0)

        async def first():
            async with TeacherClient(config) as client:
                return await CallRunner(store, config, online(client)).run(
                    dataclasses.replace(score_task(store, [job]), parse=strict))

        stored = asyncio.run(first())
        reused = asyncio.run(CallRunner(store, config, never).run(score_task(store, [job])))
    assert stored.status == "failed" and reused.status == "ok"
    assert _q(store, "SELECT status, error FROM teacher_call") == [("ok", None)]
    assert _q(store, "SELECT COUNT(*) FROM sentence_score") == [(len(job.sentences),)]


@pytest.mark.both_backends
def test_one_refused_rationale_fails_alone_in_its_group(store):
    """Item 4: the group is split and asked again; --retry-failed asks the refused one alone."""
    ids = add_rationales(store, 5)
    _refuse(store, ids[1])
    with serve_in_thread(reject=REFUSED) as url:
        config = _config(url)
        summary = _scores(store, config, group_by_question=True)
        requests = _stats(url)["requests"]
        again = _scores(store, config, group_by_question=True)
        assert again.selected == 0 and _stats(url)["requests"] == requests
        retried = _scores(store, config, group_by_question=True, retry_failed=True)
        assert _stats(url)["requests"] == requests + 1
    assert (summary.done, dict(summary.failed)) == (4, {"rejected": 1})
    assert (retried.selected, retried.done, dict(retried.failed)) == (1, 0, {"rejected": 1})
    assert _q(store, "SELECT COUNT(DISTINCT s.rationale_id) FROM sentence_score ss "
                     "JOIN sentence s ON s.id = ss.sentence_id") == [(4,)]


@pytest.mark.both_backends
def test_a_refused_group_in_a_batch_is_split_by_the_next_run(store):
    """Item 4, batch mode: the refused line's group goes into the next batch as two halves."""
    ids = add_rationales(store, 4)
    _refuse(store, ids[1])
    with serve_in_thread(reject=REFUSED) as url:
        config = _config(url)
        first = _batch(store, config, group_by_question=True)
        done = asyncio.run(ingest(store, config))
        halves = _batch(store, config, group_by_question=True, retry_failed=True)  # split, not the same group
        split = asyncio.run(ingest(store, config))
        last = _batch(store, config, group_by_question=True)
    assert first.requests == 2 and (done.ok, done.failed) == (1, 1)
    assert halves.requests == 2 and (split.ok, split.failed) == (1, 1) and last.requests == 0
    assert _q(store, "SELECT COUNT(DISTINCT s.rationale_id) FROM sentence_score ss "
                     "JOIN sentence s ON s.id = ss.sentence_id") == [(3,)]


def test_batch_retry_failed_submits_and_estimates_the_given_up(store):
    """Item 5: --batch --retry-failed sends what the online path would send, and --dry-run counts it."""
    ids = add_rationales(store, 2)
    _refuse(store, ids[0])
    with serve_in_thread(reject=REFUSED) as url:
        config = _config(url)
        online_run = _scores(store, config, group_by_question=False)
        dry = _batch(store, config, group_by_question=False, retry_failed=True, dry_run=True)
        submitted = _batch(store, config, group_by_question=False, retry_failed=True)
        done = asyncio.run(ingest(store, config))
    assert dict(online_run.failed) == {"rejected": 1}
    assert (dry.selected, dry.est_calls, dry.est_stored) == (1, 1, 0)
    assert submitted.requests == 1 and done.failed == 1
    assert _q(store, "SELECT COUNT(*) FROM teacher_call") == [(2,)]  # the refused row was updated


@pytest.mark.both_backends
def test_a_refused_batch_creation_fails_its_row_and_blocks_nothing(store, cli):
    """Item 6: a 4xx on POST /batches fails that row (its error kept); status and ingest go on."""
    add_rationales(store, 4)
    with serve_in_thread(refuse_batch_creates=1) as url:
        config = _config(url)
        with pytest.raises(TeacherError, match="refused batch .*marked failed"):
            _batch(store, config, limit=2, group_by_question=False)
        shown = cli("batch", "status", "--base-url", url)
        submitted = _batch(store, config, group_by_question=False)
        ingested = cli("batch", "ingest", "--base-url", url)
        stats = _stats(url)
    assert shown.exit_code == 0 and "failed" in shown.output and "HTTP 400" in shown.output, shown.output
    assert submitted.requests == 4 and stats["batches"] == 1
    assert ingested.exit_code == 0 and "4 answered" in ingested.output, ingested.output
    assert _q(store, "SELECT status, ingested_at IS NOT NULL, error LIKE '%input file is invalid%' "
                     "FROM teacher_batch ORDER BY id") == [("failed", True, True), ("completed", True, None)]


@pytest.mark.both_backends
def test_a_waiter_that_claims_after_the_answer_was_stored_does_not_send(store, db_url):
    """Item 9: another collector stores the answer and lets the request go between this one's
    look in the store and its claim: claimed first, looked after, it reuses that answer."""
    first, second = _identical(store, 2)
    with store.session() as s:
        [job] = jobs_of(s, [first])
    with serve_in_thread() as url:
        config = _config(url)

        def other_collector() -> None:
            with Store(db_url) as other:
                asyncio.run(collect(other, config, CollectRequest("score", only=(second,))))

        class Late(Claims):
            def take_request(self, request_hash: str) -> bool:
                if not stored_elsewhere:
                    stored_elsewhere.append(threading.Thread(target=other_collector))
                    stored_elsewhere[0].start()
                    stored_elsewhere[0].join()
                return super().take_request(request_hash)

        stored_elsewhere: list = []

        async def waiter():
            async with TeacherClient(config) as client:
                claims = Late(store, "score", "t", lambda s, r: True, lease_s=5)
                return await CallRunner(store, config, online(client), claims=claims).run(score_task(store, [job]))

        outcome = asyncio.run(waiter())
        stats = _stats(url)
    assert outcome.status == "ok" and stats["answered"] == 1
    assert _q(store, "SELECT COUNT(*) FROM request_claim") == [(0,)]


@pytest.mark.both_backends
def test_a_losing_duplicate_keeps_its_attempts(store):
    """Item 9: two runners answer one request at once (no claims): the first stored call stays,
    and the loser's paid attempt is recorded on it."""
    (rid,) = add_rationales(store, 1)
    with store.session() as s:
        [job] = jobs_of(s, [rid])
    config = _config("http://127.0.0.1:9/v1", price_in=1.0, price_out=1.0)
    content = '{"scores": [%s]}' % ", ".join(["0.5"] * len(job.sentences))
    first_done = asyncio.Event()

    def answerer(tokens: int, wait: bool):
        async def answer(body, key):
            if wait:
                await first_done.wait()
            attempt = Attempt(1, AttemptOutcome.ok, utcnow(), http_status=200, tokens_in=tokens, tokens_out=10)
            return Reply(content, tokens, 10, 0, 1, 1.0, finish_reason="stop", log=[attempt])
        return answer

    async def race():
        slow = asyncio.create_task(CallRunner(store, config, answerer(999, True)).run(score_task(store, [job])))
        await asyncio.sleep(0.05)
        fast = await CallRunner(store, config, answerer(1_000, False)).run(score_task(store, [job]))
        first_done.set()
        return fast, await slow

    fast, slow = asyncio.run(race())
    assert fast.call_id == slow.call_id
    assert _q(store, "SELECT tokens_in FROM teacher_call") == [(1_000,)]
    assert sorted(t for (t,) in _q(store, "SELECT tokens_in FROM teacher_attempt")) == [999, 1_000]


def _invariant_queries() -> list[tuple[str, str]]:
    """(name, SQL) of each check in docs/sql.md's invariant block; each must count 0."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "sql.md").read_text()
    block = re.search(r"<!-- invariant -->\s*```sql\n(.*?)```", text, re.S)
    assert block, "docs/sql.md has no invariant block"
    return [(q.strip().splitlines()[0], q.strip()) for q in block.group(1).split(";") if q.strip()]


@pytest.mark.slow  # among the longest of `make test` (--durations); CI runs it in `make test-slow`
@pytest.mark.both_backends
def test_the_invariant_holds_over_the_mixes(store):
    """Overlapping submissions and an online run, two `batch status` on fresh batches, a refused
    rationale in a group, ingest under other flags, a batch then an online run then ingest:
    afterwards every paid answer is an `ok` attempt in SQL, every answer is linked to its
    rationales, and no request was paid twice."""
    ids = add_rationales(store, 12)
    _refuse(store, ids[3])
    with serve_in_thread(latency_ms=100, reject=REFUSED) as url:
        config, later = _config(url), _config(url, score_from="logprobs", max_tokens=999)
        mixed = [collect_scores(store, config, round=1, batch=BatchLimits(max_requests=2), lease_s=5,
                               group_by_question=True),
                 collect_scores(store, config, round=1, batch=BatchLimits(), lease_s=5, group_by_question=True),
                 collect_scores(store, config, round=1, lease_s=5, group_by_question=True)]
        asyncio.run(_together(*mixed))
        asyncio.run(_together(status(store, later), status(store, later)))
        asyncio.run(ingest(store, later))
        for _ in range(3):  # the refused group, split until the refused rationale is alone
            _batch(store, config, group_by_question=True)
            _scores(store, config, group_by_question=True)
            asyncio.run(ingest(store, later))
        stats = _stats(url)
    assert stats["answered_twice"] == 0
    assert _q(store, "SELECT COUNT(*) FROM teacher_attempt WHERE outcome = 'ok'") == [(stats["answered"],)]
    for name, sql in _invariant_queries():
        assert _q(store, sql) == [(0,)], name
    assert _q(store, "SELECT COUNT(DISTINCT s.rationale_id) FROM sentence_score ss "
                     "JOIN sentence s ON s.id = ss.sentence_id") == [(11,)]
