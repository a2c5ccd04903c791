"""Issue 14: whatever the teacher answers, nothing paid is lost and nothing is paid twice.

Each test drives the collectors against the fake teacher on 127.0.0.1 with one of its fault
modes (ares_data/fake_teacher.py); those touching the store run on SQLite and PostgreSQL.
"""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import select

from ares_data.errors import TeacherError
from ares_data.exporters import scored_rollouts
from ares_data.fake_answers import sentence_score
from ares_data.fake_teacher import serve_in_thread
from ares_data.tables import Question
from ares_data.teacher import TeacherConfig, collect_corrections, collect_scores
from ares_data.teacher.batch import BatchApi, BatchLimits, ingest, status
from ares_data.teacher.calls import CallRunner, Task
from ares_data.teacher.client import Reply
from ares_data.teacher.prompts import SCORE, score_ask
from ares_data.teacher.tasks import GroupCap
from ares_data.teacher.validation import parse_scores
from teacher_support import add_rationales
from teacher_support import fake_config as _config
from teacher_support import fake_stats as _stats
from teacher_support import sql_rows as _q

SAME = "Magnets attract iron. The nail is iron. The answer is (A)."


def _identical(store, n: int, text: str = SAME) -> list[int]:
    """`n` student rationales of one question with the same text (k samples of a small model)."""
    with store.session() as s:
        q = Question(dataset="t", source_id="same", split="train", question="Which is iron?",
                     choices=["nail", "wood"], answer_index=0)
        s.add(q)
        s.flush()
        return [store.add_rationale(s, question_id=q.id, source="student", text=text, dedup_key=f"same:{i}",
                                    round=1, sample_index=i)[0].id for i in range(n)]


@pytest.mark.both_backends
def test_reused_answers_are_linked_to_their_call_and_exported(store):
    """Item 1: identical rationales are asked once; every one is linked to that call and exported."""
    ids = _identical(store, 3)
    with serve_in_thread() as url:
        summary = asyncio.run(collect_scores(store, _config(url), round=1))
        assert _stats(url)["answered"] == 1
    assert (summary.done, summary.calls, summary.reused) == (3, 1, 2)
    assert sorted(r for _, r in _q(store, "SELECT teacher_call_id, rationale_id FROM v_call_rationale")) == ids
    kept, skipped, _ = scored_rollouts(store, 1)
    assert sorted(r.rationale.id for r in kept) == ids and not skipped
    labelled = _q(store, "SELECT COUNT(DISTINCT rationale_id) FROM v_sentence_labels")
    assert labelled == [(3,)]


@pytest.mark.both_backends
def test_valid_lists_of_a_partly_invalid_answer_are_kept_and_exported(store):
    """Item 2: every answer spoils its last list; the others are stored, exported, never asked again."""
    add_rationales(store, 6)  # questions of 2, 2, 2 rationales (and one empty question)
    with serve_in_thread(fault_rate=1.0, faults=("wrong_count",)) as url:
        config = _config(url, max_repairs=0)
        summary = asyncio.run(collect_scores(store, config, round=1, group_by_question=True))
        again = asyncio.run(collect_scores(store, config, round=1, group_by_question=True))
        answered = _stats(url)["answered"]
    assert (summary.done, sum(summary.failed.values()), summary.calls) == (3, 3, 3)
    assert again.selected == 0 and answered == 3  # the valid ones count as answered, the failed ones gave up
    assert {s for (s,) in _q(store, "SELECT status FROM teacher_call")} == {"failed"}
    kept, skipped, _ = scored_rollouts(store, 1)
    assert len(kept) == 3 and skipped["scoring_failed"] == 3
    for rollout in kept:
        assert rollout.scores == [sentence_score(s.text) for s in rollout.sentences]
    assert _q(store, "SELECT COUNT(DISTINCT rationale_id) FROM v_sentence_labels") == [(3,)]


@pytest.mark.both_backends
def test_prose_with_bracketed_numbers_is_not_a_score(store):
    """Item 3: `Sentence [1] is right. {"scores": [...]}` gives the object's scores, never [1]."""
    add_rationales(store, 4)
    with serve_in_thread(prose=True) as url:
        summary = asyncio.run(collect_scores(store, _config(url), round=1, group_by_question=False))
    assert summary.done == 4 and not summary.failed
    rows = _q(store, "SELECT s.text, ss.score FROM sentence_score ss JOIN sentence s ON s.id = ss.sentence_id")
    assert rows and all(score == sentence_score(text) for text, score in rows)


def test_two_conflicting_candidates_are_invalid_not_a_guess():
    from ares_data.errors import InvalidAnswer
    from ares_data.teacher.grouped import parse_group

    assert parse_scores('I think [0.5]. {"scores": [0.3]}', 1) == [0.3]
    with pytest.raises(InvalidAnswer, match="2 different") as caught:
        parse_group('{"R1": [0.1]} no wait: {"R1": [0.9]}', {"R1": 1})
    assert caught.value.code == "ambiguous"


@pytest.mark.both_backends
def test_a_refused_request_fails_alone_and_is_not_sent_again(store):
    """Item 4: context_length_exceeded on one rationale: it fails with the provider's reason, the
    others are scored, a rerun sends nothing, --retry-failed asks it again on purpose."""
    add_rationales(store, 4)
    with store.session() as s:
        from ares_data.tables import Rationale, Sentence

        victim = s.get(Rationale, 1)
        first = s.exec(select(Sentence).where(Sentence.rationale_id == victim.id)).first()
        first.text = "HUGE " + first.text
        s.add(first)
    with serve_in_thread(reject={"HUGE": "context_length_exceeded"}) as url:
        config = _config(url)
        summary = asyncio.run(collect_scores(store, config, round=1, group_by_question=False))
        assert (summary.done, dict(summary.failed)) == (3, {"rejected": 1})
        assert _q(store, "SELECT status, error LIKE '%context_length_exceeded%' FROM teacher_call "
                         "WHERE rationale_id = 1") == [("failed", True)]
        requests = _stats(url)["requests"]
        again = asyncio.run(collect_scores(store, config, round=1, group_by_question=False))
        assert again.selected == 0 and _stats(url)["requests"] == requests
        retried = asyncio.run(collect_scores(store, config, round=1, group_by_question=False, retry_failed=True))
        assert retried.selected == 1 and _stats(url)["requests"] == requests + 1  # asked again (refused again)
    assert _q(store, "SELECT COUNT(*) FROM teacher_call") == [(4,)]  # the retry updated the failed row


def test_a_format_400_stops_the_run_naming_the_parameter(store):
    add_rationales(store, 2)
    with serve_in_thread(unsupported="logprobs") as url:
        with pytest.raises(TeacherError, match="'logprobs'.*--score-from sampled"):
            asyncio.run(collect_scores(store, _config(url, score_from="logprobs", concurrency=1), round=1))
        assert _stats(url)["requests"] == 1


def test_a_cut_answer_is_repaired_with_a_larger_budget_never_kept(store):
    """Item 8: finish_reason length makes the answer invalid; the repair doubles max_tokens."""
    add_rationales(store, 1)
    with serve_in_thread(honour_max_tokens=True) as url:
        given_up = asyncio.run(collect_corrections(store, _config(url, max_tokens=8, max_repairs=0), round=1))
        assert given_up.done == 0 and dict(given_up.failed) == {"cut_off": 1}
        assert _q(store, "SELECT COUNT(*) FROM correction") == [(0,)]
        fixed = asyncio.run(collect_corrections(store, _config(url, max_tokens=8, max_repairs=3), round=1,
                                                retry_failed=True))
    assert fixed.done == 1
    chain = _q(store, "SELECT status, finish_reason, error FROM teacher_call ORDER BY id")
    assert [c[1] for c in chain] == ["length", "length", "stop"]  # the given-up row was asked again
    assert all(c[2].startswith("cut_off") for c in chain[:-1]) and chain[-1][0] == "ok"
    from ares_data.tables import TeacherCall

    with store.session() as s:
        budgets = [c.request["max_tokens"] for c in s.exec(select(TeacherCall)
                                                            .order_by(TeacherCall.id))]
    assert budgets == [8, 16, 32]
    (text,) = _q(store, "SELECT text FROM correction")[0]
    assert text.endswith(".") and len(text) > 64


def test_cut_answers_stay_invalid_when_reused(store):
    """A stored cut answer is not re-read as valid by a later run that meets it."""
    add_rationales(store, 1)
    with serve_in_thread(honour_max_tokens=True) as url:
        asyncio.run(collect_corrections(store, _config(url, max_tokens=8, max_repairs=0), round=1))
        requests = _stats(url)["requests"]
        again = asyncio.run(collect_corrections(store, _config(url, max_tokens=8, max_repairs=0), round=1,
                                                retry_failed=False))
        assert again.selected == 0 and _stats(url)["requests"] == requests


@pytest.mark.both_backends
def test_batch_ingest_matches_lines_whatever_the_flags_are_now(store):
    """Item 5: answers submitted with one set of flags are ingested under others, nothing paid twice."""
    add_rationales(store, 6)
    with serve_in_thread() as url:
        before = _config(url, max_tokens=512, temperature=0.0)
        submitted = asyncio.run(collect_scores(store, before, round=1, group_by_question=True, batch=BatchLimits()))
        now = _config(url, max_tokens=2048, temperature=0.7, structured_output="none")
        done = asyncio.run(ingest(store, now))
        again = asyncio.run(collect_scores(store, now, round=1, group_by_question=True, batch=BatchLimits()))
        stats = _stats(url)
    assert submitted.requests == 3 and (done.ok, done.unmatched, done.deferred) == (3, 0, 0)
    assert again.requests == 0 and stats["answered"] == 3 and stats["answered_twice"] == 0
    kept, _, _ = scored_rollouts(store, 1)
    assert len(kept) == 6


@pytest.mark.both_backends
def test_bad_and_refused_batch_lines_are_recorded_and_skipped(store):
    add_rationales(store, 4)
    with store.session() as s:
        from ares_data.tables import Sentence

        sentence = s.exec(select(Sentence).order_by(Sentence.id.desc())).first()
        sentence.text = "HUGE " + sentence.text
        s.add(sentence)
    with serve_in_thread(reject={"HUGE": "context_length_exceeded"}, garble_batch_lines=1) as url:
        config = _config(url)
        asyncio.run(collect_scores(store, config, round=1, group_by_question=False, batch=BatchLimits()))
        done = asyncio.run(ingest(store, config))
        assert (done.batches, done.ok, done.failed, done.unreadable) == (1, 2, 1, 1)
        lines = _q(store, "SELECT status, error FROM teacher_batch_request ORDER BY status")
        assert [s for s, _ in lines] == ["answered", "answered", "failed", "unreadable"]
        assert lines[2][1] == "rejected" and "unreadable batch reply" in lines[3][1]
        resubmitted = asyncio.run(collect_scores(store, config, round=1, group_by_question=False,
                                                 batch=BatchLimits()))
    assert resubmitted.requests == 1  # the unreadable one; the refused one is not sent again


@pytest.mark.both_backends
def test_a_batch_whose_creation_answer_was_lost_is_found_not_created_twice(store):
    """Item 6: POST /batches created the batch but answered 500: it is found by its metadata."""
    add_rationales(store, 2)
    with serve_in_thread(lose_batch_creates=1) as url:
        config = _config(url)
        submitted = asyncio.run(collect_scores(store, config, round=1, batch=BatchLimits()))
        done = asyncio.run(ingest(store, config))
        assert _stats(url)["batches"] == 1
    assert submitted.batches == ["batch_fake_0"] and done.ok == 2


@pytest.mark.both_backends
def test_an_unrecorded_batch_is_adopted_on_restart(store):
    """A run that died between recording the batch and hearing back: `status` finds it by key."""
    from ares_data.tables import TeacherBatch

    add_rationales(store, 2)
    with serve_in_thread() as url:
        config = _config(url)

        async def create_then_die() -> str:
            async with BatchApi(config) as api:
                file_id = await api.upload(b"", "empty.jsonl")
                await api.create(file_id, {"ares_key": "k-1"})
                return file_id

        file_id = asyncio.run(create_then_die())
        with store.session() as s:
            s.add(TeacherBatch(provider="openai", model="fake", kind="score", prompt_name="score_v1",
                               prompt_version="v1", remote_id="creating:k-1", input_file_id=file_id,
                               status="creating", request_count=0, ares_key="k-1"))
        rows = asyncio.run(status(store, config))
        assert _stats(url)["batches"] == 1
    assert [r.remote_id for r in rows] == ["batch_fake_0"]


def test_batch_commands_without_model_cover_every_batch(store, cli):
    """Item 9: batches of another model are ingested by a plain `ares batch ingest`."""
    add_rationales(store, 2)
    with serve_in_thread() as url:
        asyncio.run(collect_scores(store, _config(url, model="other-model"), round=1, batch=BatchLimits()))
        shown = cli("batch", "status", "--base-url", url)
        result = cli("batch", "ingest", "--base-url", url)
        only_fake = cli("batch", "ingest", "--base-url", url, "--model", "fake")
    assert shown.exit_code == 0 and "other-model" in shown.output
    assert result.exit_code == 0 and "ingested 1 batches: 2 answered" in result.output
    assert "ingested 0 batches" in only_fake.output and "no batch is waiting" in only_fake.output
    assert _q(store, "SELECT DISTINCT model FROM teacher_call") == [("other-model",)]


ARES = [sys.executable, "-c", "from ares_data.cli import main; main()"]


@pytest.mark.slow  # among the longest of `make test` (--durations); CI runs it in `make test-slow`
@pytest.mark.both_backends
def test_two_collectors_never_send_the_same_request(store, db_url):
    """Item 7: two processes claim different identical rationales; the request is sent once."""
    ids = _identical(store, 8)
    env = {**os.environ, "ARES_DB": db_url, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with serve_in_thread(latency_ms=400) as url:
        argv = [*ARES, "collect-scores", "--round", "1", "--no-group-by-question", "--base-url", url,
                "--model", "fake", "--concurrency", "4", "--lease", "5"]
        procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        outs = [p.communicate(timeout=120) for p in procs]
        stats = _stats(url)
    assert all(p.returncode == 0 for p in procs), outs
    assert stats["answered"] == 1 and stats["answered_twice"] == 0
    assert _q(store, "SELECT COUNT(*) FROM teacher_call") == [(1,)]
    assert sorted(r for (r,) in _q(store, "SELECT rationale_id FROM v_call_rationale")) == ids
    assert _q(store, "SELECT COUNT(*) FROM request_claim") == [(0,)]


@pytest.mark.both_backends
def test_a_racing_duplicate_never_overwrites_the_stored_call(store):
    """Two runners answer the same request at once (no claims): the first stored call stays."""
    (rid,) = add_rationales(store, 1)
    with store.session() as s:
        from ares_data.tables import Rationale, Sentence

        rationale = s.get(Rationale, rid)
        question = s.get(Question, rationale.question_id)
        texts = [x.text for x in s.exec(select(Sentence).where(Sentence.rationale_id == rid)
                                        .order_by(Sentence.idx))]
    config = _config("http://127.0.0.1:9/v1", price_in=1.0, price_out=1.0)
    content = '{"scores": [%s]}' % ", ".join(["0.5"] * len(texts))
    first_done = asyncio.Event()

    def answerer(tokens: int, wait: bool):
        async def answer(body, key):
            if wait:
                await first_done.wait()
            return Reply(content, tokens, 10, 0, 1, 1.0, finish_reason="stop")
        return answer

    def task() -> Task:
        return Task("score", SCORE, score_ask(question, texts), lambda t: parse_scores(t, len(texts)),
                    {"n": len(texts)}, question.id, rid)

    async def race():
        slow = asyncio.create_task(CallRunner(store, config, answerer(999_999, True)).run(task()))
        await asyncio.sleep(0.05)  # the slow one is in flight, its request not stored yet
        fast = await CallRunner(store, config, answerer(1_000, False)).run(task())
        first_done.set()
        return fast, await slow

    fast, slow = asyncio.run(race())
    assert fast.status == slow.status == "ok" and fast.call_id == slow.call_id
    assert _q(store, "SELECT tokens_in FROM teacher_call") == [(1_000,)]


def test_grouped_calls_are_capped_and_sized():
    """Item 10: a large group is split, and max_tokens grows with the scores asked."""
    from types import SimpleNamespace

    from ares_data.teacher.client import build_request
    from ares_data.teacher.grouped import group_ask
    from ares_data.teacher.tasks import Job, units

    question = SimpleNamespace(id=1, question="Q?", choices=["a", "b"], answer_index=0, hint="", caption=None,
                               image_path=None, image_sha256=None)
    jobs = [Job(SimpleNamespace(id=i), question, [SimpleNamespace(text=f"S{j}.") for j in range(30)])
            for i in range(5)]
    assert [len(u) for u in units(jobs, True, GroupCap(rationales=2, sentences=1000))] == [2, 2, 1]
    assert [len(u) for u in units(jobs, True, GroupCap(rationales=16, sentences=70))] == [2, 2, 1]
    config = TeacherConfig.from_options(base_url="http://127.0.0.1:9/v1", model="m")
    small, _ = build_request(config, group_ask(question, [["One."], ["Two."]]))
    large, _ = build_request(config, group_ask(question, [[f"S{j}." for j in range(150)]] * 2))
    assert small["max_tokens"] == config.max_tokens and large["max_tokens"] > 8 * 300


@pytest.mark.both_backends
def test_collect_scores_splits_groups_over_the_cap(store):
    add_rationales(store, 6)
    with serve_in_thread() as url:
        summary = asyncio.run(collect_scores(store, _config(url), round=1, group_by_question=True,
                                             group_cap=GroupCap(rationales=1)))
    assert (summary.done, summary.calls) == (6, 6)


def test_cli_caps_groups_and_retries_failed_on_request(store, cli):
    add_rationales(store, 4)
    with serve_in_thread(fault_rate=1.0, faults=("malformed",)) as url:
        capped = cli("collect-scores", "--round", 1, "--base-url", url, "--model", "fake", "--max-group", 1,
                     "--max-repairs", 0)
        skipped = cli("collect-scores", "--round", 1, "--base-url", url, "--model", "fake", "--max-group", 1)
        retried = cli("collect-scores", "--round", 1, "--base-url", url, "--model", "fake", "--max-group", 1,
                      "--max-repairs", 0, "--retry-failed")
    assert capped.exit_code == 0 and "scored 0 of 4" in capped.output and "calls sent 4" in capped.output
    assert "scored 0 of 0" in skipped.output
    assert "scored 0 of 4" in retried.output and "calls sent 4" in retried.output


def test_ppo_finds_the_checkpoint_of_rollouts_scored_by_grouped_or_reused_calls(store):
    """The rollouts' checkpoint is found through their scores, not through `teacher_call.rationale_id`
    (NULL on grouped calls, another rationale's on a reused answer)."""
    from ares_data.tables import ModelCheckpoint, Rationale
    from ares_train.stages import rollout_checkpoint

    ids = _identical(store, 3)
    with store.session() as s:
        checkpoint = ModelCheckpoint(name="base", path="/m", base_model="m", stage="base")
        s.add(checkpoint)
        s.flush()
        for rid in ids:
            s.get(Rationale, rid).model_checkpoint_id = checkpoint.id
    assert rollout_checkpoint(store, 1) is None
    with serve_in_thread() as url:
        asyncio.run(collect_scores(store, _config(url), round=1, group_by_question=True))
    assert rollout_checkpoint(store, 1).name == "base"


@pytest.mark.parametrize("provider,data,code", [
    ("openai", {"choices": [{"finish_reason": "length", "message": {"content": '{"scores": [0.5]}'}}]}, "cut_off"),
    ("anthropic", {"stop_reason": "max_tokens", "content": []}, "cut_off"),
    ("openai", {"choices": [{"finish_reason": "stop", "message": {"content": "", "refusal": "I can't."}}]}, "refused"),
    ("openai", {"choices": [{"finish_reason": "content_filter", "message": {"content": "{"}}]}, "refused"),
])
def test_cut_and_refused_endings_make_any_answer_invalid(provider, data, code):
    from ares_data.errors import InvalidAnswer
    from ares_data.teacher.calls import verdict
    from ares_data.teacher.client import ending
    from ares_data.teacher.config import Provider

    from ares_data.teacher.prompts import Ask

    task = Task("score", SCORE, Ask("system", []), lambda t: parse_scores(t, 1))
    with pytest.raises(InvalidAnswer) as caught:
        verdict(task, '{"scores": [0.5]}', *ending(Provider(provider), data))
    assert caught.value.code == code
    assert verdict(task, '{"scores": [0.5]}', "stop", None) == [0.5]
