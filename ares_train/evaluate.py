"""Evaluation that needs the student: greedy answers for accuracy, and the rationales the
pairwise judge compares.

Each greedy rationale is stored once per (checkpoint, question) as a student rationale with
no round (so round summaries ignore it), and reused by accuracy and win rate alike.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import select

from ares_data.enums import EvalKind, RationaleSource
from ares_data.formatting import parse_answer, student_prompt
from ares_data.runs import add_eval_results
from ares_data.store import Store
from ares_data.tables import EvalResult, ModelCheckpoint, Question, Rationale

from .loading import load_checkpoint
from .placement import Placement, placement_of
from .rollout_engines import HFEngine
from .rollouts import sample_responses


def eval_dedup_key(checkpoint_id: int, question_id: int) -> str:
    return f"eval:{checkpoint_id}:{question_id}"


def eval_questions(store: Store, split: str, limit: int | None) -> list[Question]:
    """The split's answerable questions in a stable order, so every checkpoint sees the same ones."""
    with store.session() as session:
        stmt = (select(Question).where(Question.split == split, Question.answer_index.is_not(None))
                .order_by(Question.id).limit(limit))
        return list(session.exec(stmt))


def ensure_eval_rationales(
    store: Store,
    checkpoint: ModelCheckpoint,
    questions: list[Question],
    *,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    placement: Placement | None = None,
    model_and_tokenizer: tuple[Any, Any] | None = None,
) -> dict[int, Rationale]:
    """question_id -> the checkpoint's greedy rationale, generating only the missing ones
    (on `placement`, CPU float32 when None)."""
    keys = {eval_dedup_key(checkpoint.id, q.id): q for q in questions}
    with store.session() as session:
        have = {r.question_id: r for r in session.exec(select(Rationale).where(Rationale.dedup_key.in_(keys)))}
    missing = [q for q in questions if q.id not in have]
    if missing:
        model, tokenizer = model_and_tokenizer or load_checkpoint(store, checkpoint, placement)[:2]
        sampled = sample_responses(HFEngine(model, tokenizer), tokenizer, [student_prompt(q) for q in missing],
                                   questions=missing, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                   do_sample=False)
        generation = {"do_sample": False, "max_new_tokens": max_new_tokens, "purpose": "eval",
                      **placement_of(model).describe()}
        with store.session() as session:
            for q, (one,) in zip(missing, sampled):
                row, _ = store.add_rationale(
                    session, question_id=q.id, source=RationaleSource.student, text=one.text,
                    dedup_key=eval_dedup_key(checkpoint.id, q.id), model_checkpoint_id=checkpoint.id,
                    predicted_answer=parse_answer(one.text, len(q.choices)), generation={**generation, **one.record()},
                )
                have[q.id] = row
    return have


def evaluate_accuracy(
    store: Store,
    checkpoint: str | ModelCheckpoint = "latest",
    *,
    split: str = "test",
    limit: int | None = None,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    placement: Placement | None = None,
) -> tuple[ModelCheckpoint, dict[str, int]]:
    """Greedy rationale + answer per question; one `eval_result` row each (re-runs add nothing).

    Unparseable answers are stored with `predicted_answer` NULL and count as wrong.
    """
    from .loading import find_checkpoint

    row = find_checkpoint(store, checkpoint) if isinstance(checkpoint, str) else checkpoint
    questions = eval_questions(store, split, limit)
    with store.session() as session:
        done = set(session.exec(select(EvalResult.question_id).where(
            EvalResult.kind == EvalKind.accuracy, EvalResult.model_checkpoint_id == row.id, EvalResult.split == split)))
    todo = [q for q in questions if q.id not in done]
    rationales = ensure_eval_rationales(store, row, todo, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                        placement=placement)
    results = []
    for q in todo:
        r = rationales[q.id]
        results.append(dict(kind=EvalKind.accuracy, model_checkpoint_id=row.id, question_id=q.id, split=split,
                            rationale_id=r.id, predicted_answer=r.predicted_answer,
                            correct=r.predicted_answer == q.answer_index))
    add_eval_results(store, results)
    return row, {"questions": len(questions), "evaluated_now": len(todo)}
