"""OpenAI Batch API mode against the fake teacher's files and batches endpoints, over loopback."""

import asyncio

import httpx
import pytest

from ares_data.errors import TeacherError
from ares_data.fake_teacher import serve_in_thread
from ares_data.teacher import TeacherConfig, collect_corrections, collect_scores
from ares_data.teacher.batch import BatchLimits, chunks, ingest
from ares_data.teacher.pricing import cost

from teacher_support import add_rationales

COUNTS = {t: f"SELECT COUNT(*) FROM {t}" for t in
          ("teacher_call", "sentence_score", "correction", "rationale", "teacher_batch", "teacher_batch_request")}


def _config(url: str, **options) -> TeacherConfig:
    return TeacherConfig.from_options(base_url=url, model="fake", price_in=1.0, price_out=2.0, **options)


def _stats(url: str) -> dict:
    return httpx.get(url.removesuffix("/v1") + "/stats").json()


def _counts(store) -> dict[str, int]:
    return {t: store.query_readonly(q)[1][0][0] for t, q in COUNTS.items()}


def _submit(store, config, limits=BatchLimits(), **options):
    return asyncio.run(collect_scores(store, config, round=1, batch=limits, **options))


@pytest.mark.both_backends
def test_submit_split_ingest_once(store):
    add_rationales(store, 6)
    with serve_in_thread() as url:
        config = _config(url)
        submitted = _submit(store, config, BatchLimits(max_requests=4))
        assert submitted.requests == 6 and len(submitted.batches) == 2  # 4 + 2 lines
        assert _stats(url)["answered"] == 0  # nothing asked online
        assert _submit(store, config).requests == 0  # in a batch already: not sent again
        done = asyncio.run(ingest(store, config))
        assert (done.batches, done.ok, done.failed, done.errors, done.deferred) == (2, 6, 0, 0, 0)
        stats = _stats(url)
        before = _counts(store)
        again = asyncio.run(ingest(store, config))
        assert again.batches == 0 and _counts(store) == before  # re-ingesting changes nothing
    assert stats["answered"] == 6 and stats["answered_twice"] == 0 and stats["batches"] == 2
    per_sentence = store.query_readonly("SELECT s.id, COUNT(ss.id) FROM sentence s "
                                        "LEFT JOIN sentence_score ss ON ss.sentence_id = s.id GROUP BY s.id")[1]
    assert per_sentence and all(n == 1 for _, n in per_sentence)
    calls = store.query_readonly("SELECT status, tokens_in, tokens_out, cost_usd FROM teacher_call")[1]
    assert len(calls) == 6 and {c[0] for c in calls} == {"ok"}
    for _, tokens_in, tokens_out, cost_usd in calls:  # half the online price
        assert cost_usd == pytest.approx(cost("fake", tokens_in, tokens_out, 1.0, 2.0) / 2)
    assert store.query_readonly("SELECT status, request_count, completed_count, ingested_at IS NOT NULL "
                                "FROM teacher_batch ORDER BY id")[1] == [("completed", 4, 4, True),
                                                                         ("completed", 2, 2, True)]


def test_a_batch_still_running_is_left_for_later(store, cli):
    add_rationales(store, 2)
    with serve_in_thread(batch_delay_s=60) as url:
        config = _config(url)
        _submit(store, config)
        done = asyncio.run(ingest(store, config))
        result = cli("batch", "status", "--base-url", url, "--model", "fake")
    assert done.batches == 0 and done.waiting and "in_progress" in done.waiting[0]
    assert _counts(store)["teacher_call"] == 0
    assert result.exit_code == 0, result.output
    assert "batch_fake_0" in result.output and "in_progress" in result.output


def test_invalid_answers_and_errors_go_into_the_next_batch(store):
    """With faults, rounds of submit + ingest end with every rationale scored or given up, the
    invalid answers repaired in a later batch (linked by repair_of_id) and errors asked again."""
    add_rationales(store, 16)
    with serve_in_thread(fault_rate=0.4, seed=3) as url:
        config = _config(url, max_repairs=1)
        deferred = 0
        for _ in range(8):
            if _submit(store, config, group_by_question=False).requests == 0:
                break
            deferred += asyncio.run(ingest(store, config)).deferred
        stats = _stats(url)
    assert deferred > 0 and stats["by_status"].get("batch_error", 0) > 0
    assert stats["answered_twice"] == 0
    repaired = store.query_readonly("SELECT COUNT(*) FROM teacher_call c JOIN teacher_call r "
                                    "ON r.repair_of_id = c.id WHERE c.status = 'invalid'")[1][0][0]
    assert repaired > 0
    open_ = store.query_readonly(
        "SELECT COUNT(*) FROM rationale r WHERE NOT EXISTS (SELECT 1 FROM sentence s JOIN sentence_score ss "
        "ON ss.sentence_id = s.id WHERE s.rationale_id = r.id) AND NOT EXISTS (SELECT 1 FROM teacher_call c "
        "WHERE c.rationale_id = r.id AND c.status = 'failed')")[1][0][0]
    assert open_ == 0
    assert store.query_readonly("SELECT COUNT(*) FROM teacher_call WHERE status = 'error'")[1][0][0] == 0


def test_corrections_by_batch(store):
    add_rationales(store, 3)
    with serve_in_thread() as url:
        config = _config(url)
        submitted = asyncio.run(collect_corrections(store, config, round=1, batch=BatchLimits()))
        done = asyncio.run(ingest(store, config))
    assert submitted.requests == 3 and done.ok == 3
    assert _counts(store)["correction"] == 3


def test_dry_run_prices_at_the_batch_discount(store):
    add_rationales(store, 4)
    config = TeacherConfig.from_options(base_url="http://127.0.0.1:9/v1", model="gpt-4o")
    online = asyncio.run(collect_scores(store, config, round=1, dry_run=True))
    batch = _submit(store, config, dry_run=True)
    assert online.est_cost_usd > 0 and batch.est_cost_usd == pytest.approx(online.est_cost_usd / 2)
    assert "Batch API price" in " ".join(batch.lines())


def test_chunks_hold_the_limits():
    lines = [b"x" * 10 + b"\n"] * 7
    assert [len(c) for c in chunks(lines, BatchLimits(max_requests=3, max_bytes=10_000))] == [3, 3, 1]
    assert [len(c) for c in chunks(lines, BatchLimits(max_requests=100, max_bytes=25))] == [2, 2, 2, 1]
    with pytest.raises(TeacherError, match="over the 5-byte"):
        chunks(lines, BatchLimits(max_bytes=5))


def test_cli_round_trip_grouped(store, cli):
    add_rationales(store, 4)
    with serve_in_thread() as url:
        flags = ["--base-url", url, "--model", "fake"]
        submitted = cli("collect-scores", "--round", "1", "--batch", *flags)
        ingested = cli("batch", "ingest", *flags)
        listed = cli("batch", "status", *flags)
        refused = cli("collect-scores", "--round", "1", "--batch", "--max-cost", "1", *flags)
    assert submitted.exit_code == 0, submitted.output
    assert "submitted 2 requests for 4 rationales in 1 batches" in submitted.output  # 2 questions
    assert ingested.exit_code == 0 and "2 answered" in ingested.output, ingested.output
    assert "completed" in listed.output
    assert refused.exit_code != 0 and "--max-cost" in refused.output
    assert store.query_readonly("SELECT COUNT(*) FROM teacher_call_rationale")[1][0][0] == 4
