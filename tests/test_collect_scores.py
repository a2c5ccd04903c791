"""Collecting sentence scores over real loopback HTTP from the fake teacher."""

import asyncio
import json
import time

import httpx
import pytest
from sqlmodel import select

from ares_data.fake_answers import sentence_score
from ares_data.fake_teacher import serve_in_thread
from ares_data.tables import Sentence, SentenceScore, TeacherCall
from ares_data.teacher import TeacherConfig, collect_scores

from teacher_support import add_rationales


def stats(url):
    return httpx.get(url.removesuffix("/v1") + "/stats").json()


def teacher(url, **options):
    return TeacherConfig.from_options(base_url=url, model="fake", **{"rpm": 6000, "timeout": 2, **options})


def scores_by_sentence(store):
    with store.session() as s:
        rows = s.exec(select(Sentence, SentenceScore).join(SentenceScore, SentenceScore.sentence_id == Sentence.id))
        found = {}
        for sentence, score in rows:
            found.setdefault(sentence.id, []).append((sentence.text, score.score))
        total = len(s.exec(select(Sentence.id)).all())
    return found, total


@pytest.mark.both_backends
def test_scores_every_sentence_once_and_a_rerun_sends_nothing(store):
    add_rationales(store, 8)
    with serve_in_thread(latency_ms=20) as url:
        summary = asyncio.run(collect_scores(store, teacher(url), round=1))
        assert (summary.selected, summary.done, summary.calls, summary.reused) == (8, 8, 8, 0)
        found, total = scores_by_sentence(store)
        assert len(found) == total
        assert all(len(v) == 1 and v[0][1] == sentence_score(" ".join(v[0][0].split())) for v in found.values())
        again = asyncio.run(collect_scores(store, teacher(url), round=1))
        assert (again.selected, again.calls) == (0, 0)
        assert stats(url)["requests"] == 8
    with store.session() as s:
        calls = s.exec(select(TeacherCall)).all()
    assert len(calls) == 8
    for call in calls:
        assert call.status == "ok" and call.tokens_in > 0 and call.prompt_version
        assert 0 <= call.cached_tokens_in < call.tokens_in  # a cached head, never the whole prompt
        assert "Authorization" not in str(call.request) and call.request["messages"][0]["role"] == "system"
    # Whichever request reached the fake's prompt cache first found nothing cached (the order is the scheduler's).
    assert min(call.cached_tokens_in for call in calls) == 0


@pytest.mark.both_backends
def test_identical_rationales_share_one_call(store):
    from ares_data.tables import Question

    with store.session() as s:
        q = Question(dataset="t", source_id="1", split="train", question="Q?", choices=["a", "b"], answer_index=0)
        s.add(q)
        s.flush()
        for i in range(3):
            store.add_rationale(s, question_id=q.id, source="student", text="Same text. Twice.", dedup_key=f"k{i}",
                                round=1)
    with serve_in_thread() as url:
        summary = asyncio.run(collect_scores(store, teacher(url), round=1))
        assert stats(url)["requests"] == 1
    assert summary.done == 3 and summary.reused == 2
    found, total = scores_by_sentence(store)
    assert total == 6 and len(found) == 6


@pytest.mark.both_backends
def test_faults_are_retried_or_recorded_never_made_up(store):
    add_rationales(store, 24)
    with serve_in_thread(fault_rate=0.4, seed=3) as url:
        summary = asyncio.run(collect_scores(store, teacher(url, timeout=0.5, max_attempts=6), round=1))
        seen = stats(url)
    assert seen["answered_twice"] == 0
    assert {"500", "timeout", "truncated"} & set(seen["by_status"])
    assert summary.done + sum(summary.failed.values()) == 24
    rows = store.query_readonly("SELECT status, error, repair_of_id FROM v_teacher_calls")[1]
    invalid = [r for r in rows if r[0] in ("invalid", "failed")]
    assert invalid and all(r[1] and r[1].split(":")[0] in ("wrong_count", "not_json", "no_scores") for r in invalid)
    repairs = [r for r in rows if r[2] is not None]
    assert len(repairs) >= len([r for r in rows if r[0] == "invalid"])
    found, total = scores_by_sentence(store)
    assert all(len(v) == 1 for v in found.values())
    failed_rationales = store.query_readonly(
        "SELECT COUNT(*) FROM sentence s JOIN teacher_call tc ON tc.rationale_id = s.rationale_id "
        "WHERE tc.status = 'failed'")[1][0][0]
    assert len(found) + failed_rationales == total


def test_invalid_answers_marked_failed_after_the_repair_bound(store):
    add_rationales(store, 6)
    with serve_in_thread(fault_rate=1.0, seed=0) as url:
        summary = asyncio.run(collect_scores(store, teacher(url, max_repairs=1, max_attempts=2, timeout=0.3),
                                             round=1))
    assert summary.done == 0
    rows = store.query_readonly("SELECT status, error FROM v_teacher_calls")[1]
    assert {r[0] for r in rows} <= {"invalid", "failed", "error"} and rows
    assert all(r[1] for r in rows)
    assert store.query_readonly("SELECT COUNT(*) FROM sentence_score")[1][0][0] == 0


def test_client_rpm_below_the_server_limit_causes_no_429(store):
    add_rationales(store, 30)
    with serve_in_thread(rpm=600, latency_ms=50) as url:
        started = time.monotonic()
        summary = asyncio.run(collect_scores(store, teacher(url, rpm=540, concurrency=8), round=1))
        elapsed = time.monotonic() - started
        seen = stats(url)
    assert summary.done == 30 and "429" not in seen["by_status"]
    assert elapsed >= 29 * 60 / 540 * 0.95


@pytest.mark.parametrize("headers", [True, False], ids=["x-ratelimit-headers", "retry-after-only"])
def test_the_client_slows_down_to_the_server(store, headers):
    """With x-ratelimit-remaining-* the client waits before a 429; without, it honours Retry-After."""
    add_rationales(store, 3)
    with serve_in_thread(rpm=60, ratelimit_headers=headers) as url:
        started = time.monotonic()
        summary = asyncio.run(collect_scores(store, teacher(url, concurrency=1, max_attempts=5), round=1))
        elapsed = time.monotonic() - started
        seen = stats(url)
    assert summary.done == 3
    assert seen["by_status"].get("429", 0) == 0 if headers else 1 <= seen["by_status"]["429"] <= 2
    assert elapsed >= 1.8  # one request a second, as the server asked


def test_permanent_errors_stop_the_run_with_one_line(cli, store, monkeypatch):
    add_rationales(store, 5)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-0000")
    with serve_in_thread(api_key="sk-right") as url:
        result = cli("collect-scores", "--round", 1, "--base-url", url, "--concurrency", 1)
        assert result.exit_code == 1
        assert "HTTP 401" in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert "sk-wrong-key-0000" not in result.output + result.stderr
        assert stats(url)["requests"] == 1
    with serve_in_thread() as url:
        quota = cli("collect-scores", "--round", 1, "--base-url", url, "--model", "no-quota", "--concurrency", 1)
        assert stats(url)["requests"] == 1
    assert quota.exit_code == 1 and "out of quota" in quota.stderr


def test_dry_run_sends_nothing(cli, store):
    add_rationales(store, 6)
    with serve_in_thread() as url:
        asyncio.run(collect_scores(store, teacher(url), round=1, limit=2))
        before = stats(url)["requests"]
        result = cli("collect-scores", "--round", 1, "--base-url", url, "--model", "fake", "--dry-run",
                     "--no-group-by-question",
                     "--price-in", 2.5, "--price-out", 10)
        assert stats(url)["requests"] == before == 2
    assert result.exit_code == 0, result.output
    assert "6 rationales" not in result.stdout and "4 calls to send" in result.stdout
    assert "nothing was sent" in result.stdout and "estimated cost $0.00" in result.stdout


def test_max_cost_stops_before_the_cap(cli, store):
    add_rationales(store, 10)
    with serve_in_thread() as url:
        result = cli("collect-scores", "--round", 1, "--no-group-by-question",
                     "--base-url", url, "--price-in", 2000, "--price-out", 0,
                     "--concurrency", 1, "--max-cost", 5)
        sent = stats(url)["requests"]
    assert result.exit_code == 0, result.output
    assert "--max-cost" in result.stdout and 0 < sent < 10
    spent = store.query_readonly("SELECT SUM(cost_usd) FROM teacher_call")[1][0][0]
    assert spent <= 5


def test_keys_never_reach_the_store(cli, store, db_path, monkeypatch):
    key = "sk-test-NEVER-STORE-4242"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    add_rationales(store, 6)
    with serve_in_thread(api_key=key, fault_rate=0.3, seed=5) as url:
        result = cli("collect-scores", "--round", 1, "--base-url", url, "--timeout", 0.5)
        assert result.exit_code == 0, result.output
        bad = cli("collect-scores", "--round", 1, "--base-url", url, "--api-key-env", "NOPE_KEY", "--rationales",
                  "gold")
    assert bad.exit_code == 0
    files = [p for p in db_path.parent.iterdir() if p.name.startswith(db_path.name)]
    assert any(p.name.endswith("-wal") for p in files)
    for path in files:
        assert key.encode() not in path.read_bytes(), path
    assert key not in result.output + result.stderr


def test_limit_counts_the_selections_first_rationales_answered_or_not(cli, store):
    """As `generate --limit` counts questions: --limit 2 then --limit 3 scores 3 rationales, not 5;
    the same --limit again asks nothing."""
    ids = add_rationales(store, 6, source="gold")
    with serve_in_thread() as url:
        args = ("collect-scores", "--rationales", "gold", "--base-url", url, "--model", "fake",
                "--no-group-by-question")
        assert cli(*args, "--limit", 2).exit_code == 0
        grown = cli(*args, "--limit", 3)
        again = cli(*args, "--limit", 3, "--dry-run")
    assert grown.exit_code == 0 and "scored 1 of 1 rationales" in grown.stdout, grown.output
    assert "0 rationales to score" in again.stdout
    asked = store.query_readonly("SELECT DISTINCT rationale_id FROM teacher_call ORDER BY rationale_id")[1]
    assert [r for (r,) in asked] == ids[:3]


def test_dry_run_calibrates_on_past_calls_of_the_prompt_and_gives_a_range(cli, store):
    add_rationales(store, 12, source="gold")
    with serve_in_thread() as url:
        args = ("collect-scores", "--rationales", "gold", "--base-url", url, "--model", "fake")
        first = cli(*args, "--limit", 4, "--dry-run")
        assert cli(*args, "--limit", 4).exit_code == 0
        dry = cli(*args, "--dry-run", "--json")
        calibrated = cli(*args, "--dry-run")
        done = json.loads(cli(*args, "--json").stdout)
    assert "from the prompts' length (no past calls of score_group_v1" in first.stdout, first.stdout
    estimate = json.loads(dry.stdout)
    used = done["tokens_in"] + done["tokens_out"]
    predicted = estimate["est_tokens_in"] + estimate["est_tokens_out"]
    assert estimate["est_calibrated_from"] == 2  # the 4 rationales took 2 grouped calls (2 per question)
    assert abs(predicted - used) <= 0.05 * used  # chars / 4 alone was 20 % off
    assert estimate["est_tokens_low"] <= predicted <= estimate["est_tokens_high"]
    assert f"≈{predicted:,} ({estimate['est_tokens_low']:,}-{estimate['est_tokens_high']:,} from 2 past calls" \
        in calibrated.stdout
