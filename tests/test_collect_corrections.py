"""Corrections and the pairwise judge over loopback HTTP."""

import asyncio
import random

from sqlmodel import select

from ares_data.fake_teacher import serve_in_thread
from ares_data.tables import Correction, Question, Rationale, TeacherCall
from ares_data.teacher import TeacherConfig, collect_corrections, judge_pair

from teacher_support import add_rationales


def test_corrections_become_rationales_linked_to_their_original(cli, store):
    ids = add_rationales(store, 4)
    with store.session() as s:
        s.get(Rationale, ids[0]).text = "sample 0 the magnet pulls  the nail"
    with serve_in_thread() as url:
        result = cli("collect-corrections", "--round", 1, "--base-url", url, "--model", "fake")
        again = cli("collect-corrections", "--round", 1, "--base-url", url, "--model", "fake")
    assert result.exit_code == 0, result.output
    assert "corrected 4 of 4" in result.stdout and "corrected 0 of 0" in again.stdout
    with store.session() as s:
        corrections = s.exec(select(Correction).order_by(Correction.rationale_id)).all()
        new = [s.get(Rationale, c.corrected_rationale_id) for c in corrections]
        originals = [s.get(Rationale, c.rationale_id) for c in corrections]
    assert [c.rationale_id for c in corrections] == ids
    assert all(n.source == "correction" and n.parent_rationale_id == o.id and n.round == o.round
               and n.question_id == o.question_id for n, o in zip(new, originals))
    assert corrections[0].text == "Sample 0 the magnet pulls the nail." and corrections[0].edit_distance == 3


def test_empty_corrections_are_invalid_and_marked_failed(store):
    add_rationales(store, 4)
    with serve_in_thread(fault_rate=1.0, seed=11) as url:
        config = TeacherConfig.from_options(base_url=url, model="fake", rpm=6000, timeout=0.3, max_attempts=2,
                                            max_repairs=1)
        summary = asyncio.run(collect_corrections(store, config, round=1))
    assert summary.done == 0 and sum(summary.failed.values()) == 4
    rows = store.query_readonly("SELECT status, error FROM v_teacher_calls WHERE kind = 'correct'")[1]
    assert any(r[0] == "failed" and r[1].startswith("empty") for r in rows)
    assert store.query_readonly("SELECT COUNT(*) FROM correction")[1][0][0] == 0


def test_judge_pair_randomises_the_order_and_is_audited(store):
    with store.session() as s:
        q = Question(dataset="t", source_id="1", split="test", question="Q?", choices=["a", "b"], answer_index=0)
        s.add(q)
    with serve_in_thread() as url:
        config = TeacherConfig.from_options(base_url=url, model="fake", rpm=6000)
        first = asyncio.run(judge_pair(config, store, q, "Text one.", "Text two.", a_position="A"))
        swapped = asyncio.run(judge_pair(config, store, q, "Text two.", "Text one.", a_position="B"))
        drawn = {asyncio.run(judge_pair(config, store, q, "X.", "Y.", rng=random.Random(i)))[1] for i in range(4)}
    assert swapped[0] == {"A": "B", "B": "A", "tie": "tie"}[first[0]]  # the verdict follows the text
    assert first[1] == swapped[1]  # the same request shown the same way: answered once, from the store
    with store.session() as s:
        calls = s.exec(select(TeacherCall).where(TeacherCall.kind == "judge")).all()
    assert len(calls) == 1 + len(drawn) and all(c.status == "ok" and c.question_id == q.id for c in calls)
    assert len(drawn) == 2  # both orders of X/Y were drawn by the seeded rngs
