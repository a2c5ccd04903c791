"""Win rate over real loopback HTTP: a judge that always prefers the first rationale shown must
not decide the result, because the A/B order is drawn per question and recorded."""

import asyncio

import httpx
from sqlmodel import select

from ares_data.evaluation import judge_winrate
from ares_data.fake_teacher import serve_in_thread
from ares_data.tables import EvalResult, TeacherCall
from ares_data.teacher.config import TeacherConfig

N = 40


def _setup(store):
    with store.session() as s:
        a = store.register_checkpoint(s, name="a", path="p", base_model="p", stage="base")
        b = store.register_checkpoint(s, name="b", path="p", base_model="p", stage="base")
        questions, ra, rb = [], {}, {}
        for i in range(N):
            q, _ = store.add_question(s, dataset="t", source_id=str(i), split="test", question=f"Q{i}?",
                                      choices=["x", "y"], answer_index=0)
            questions.append(q)
            ra[q.id] = store.add_rationale(s, question_id=q.id, source="student", text=f"A says {i}.",
                                           dedup_key=f"a{i}", model_checkpoint_id=a.id)[0]
            rb[q.id] = store.add_rationale(s, question_id=q.id, source="student", text=f"B says {i}.",
                                           dedup_key=f"b{i}", model_checkpoint_id=b.id)[0]
    return a, b, questions, ra, rb


def test_position_biased_judge_does_not_decide_the_result(store):
    a, b, questions, ra, rb = _setup(store)
    with serve_in_thread() as url:
        teacher = TeacherConfig.from_options(base_url=url, model="judge-first")
        result, failed = asyncio.run(judge_winrate(store, teacher, a, b, questions, ra, rb, split="test", seed=3))
        again, _ = asyncio.run(judge_winrate(store, teacher, a, b, questions, ra, rb, split="test", seed=3))
        stats = httpx.get(url.removesuffix("/v1") + "/stats").json()
    assert failed == 0 and result.n == N and again == result
    assert stats["answered"] == N  # the re-run asked nothing
    with store.session() as s:
        rows = list(s.exec(select(EvalResult)))
        calls = list(s.exec(select(TeacherCall).where(TeacherCall.kind == "judge")))
    assert len(rows) == N and len(calls) == N  # every verdict is audited
    for row in rows:  # the judge picked whatever was shown first
        assert row.outcome == ("win" if row.a_position == "A" else "loss")
    shown_first = sum(r.a_position == "A" for r in rows)
    assert 0 < shown_first < N
    assert result.wins == shown_first
    assert result.low < 0.5 < result.high
