"""Task building: which rationales still need a teacher answer, and the `Task` that asks for it.

The online collector (collect.py) and the Batch API (batch.py) both select work and build
tasks here, so neither imports the other for it. A rationale is open while it has no `ok`
answer (nor a given-up chain, single or grouped) from this teacher model and prompt version;
a grouped call the provider refused gives up none of its rationales: the group is split and asked
again (`halves`), so only what the provider refuses alone fails.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy import exists, or_
from sqlalchemy.orm import aliased
from sqlmodel import Session, select

from ..enums import CallStatus
from ..errors import TeacherError
from ..tables import (Correction, ModelCheckpoint, Question, Rationale, Sentence, SentenceScore, TeacherCall,
                      TeacherCallRationale)
from ..store import Store
from .calls import Outcome, Task
from .claims import Claim, Claims
from .config import CollectedRationales, ScoreFrom, TeacherConfig
from .grouped import SCORE_GROUP, SCORE_GROUP_POINTS, group_task, scored_by
from .logprobs import expectations, lookup, score_row
from .prompts import CORRECT, SCORE, SCORE_POINTS, correct_ask, load, score_ask
from .validation import parse_correction, parse_scores


@dataclass
class Job:
    """One rationale to ask about, with its question and sentences."""

    rationale: Rationale
    question: Question
    sentences: list[Sentence]


TaskBuilder = Callable[..., Task]  # (store, unit of jobs, *, grouped)


def in_points(teacher: TeacherConfig) -> bool:
    """Scores asked in whole points 0-10 (each one token, so their logprobs are calibrated)."""
    return teacher.score_from is ScoreFrom.logprobs


def prompt_name(kind: str, grouped: bool, points: bool = False) -> str:
    if kind == "correct":
        return CORRECT
    return (SCORE_GROUP_POINTS if points else SCORE_GROUP) if grouped else (SCORE_POINTS if points else SCORE)


def teacher_key(kind: str, teacher: TeacherConfig, grouped: bool = False) -> tuple[str, str]:
    """(model, prompt version): what an answer must match to count for this run."""
    return teacher.model, load(prompt_name(kind, grouped, in_points(teacher))).version


def still_open(kind: str, teacher: TeacherConfig, grouped: bool = False, retry_failed: bool = False) -> tuple:
    """WHERE clauses: the rationale has no `ok` answer (nor, unless `retry_failed`, a given-up
    chain, single or grouped) from this model and prompt version."""
    model, version = teacher_key(kind, teacher, grouped)
    same_teacher = (TeacherCall.model == model, TeacherCall.prompt_version == version)
    if kind == "score":
        answered = exists().where(SentenceScore.sentence_id == Sentence.id, Sentence.rationale_id == Rationale.id,
                                  TeacherCall.id == SentenceScore.teacher_call_id, *same_teacher)
    else:
        answered = exists().where(Correction.rationale_id == Rationale.id,
                                  TeacherCall.id == Correction.teacher_call_id, *same_teacher)
    if retry_failed:
        return (~answered,)
    given_up = exists().where(TeacherCall.rationale_id == Rationale.id, TeacherCall.kind == kind,
                              TeacherCall.status == CallStatus.failed, *same_teacher)
    other = aliased(TeacherCallRationale)
    refused_with_others = TeacherCall.error.like("rejected:%") & exists().where(  # type: ignore[union-attr]
        other.teacher_call_id == TeacherCall.id, other.rationale_id != TeacherCallRationale.rationale_id)
    given_up_in_group = exists().where(
        TeacherCallRationale.rationale_id == Rationale.id, TeacherCall.id == TeacherCallRationale.teacher_call_id,
        TeacherCall.kind == kind, TeacherCall.status == CallStatus.failed, *same_teacher,
        or_(TeacherCall.error.is_(None), ~refused_with_others))  # type: ignore[union-attr]
    return ~answered, ~given_up, ~given_up_in_group


@dataclass(frozen=True)
class Selection:
    """Which rationales a run looks at: a source and round, or explicit ids (`only`)."""

    kind: str
    source: CollectedRationales = CollectedRationales.student
    round: int | None = None
    limit: int | None = None
    checkpoint: str | None = None
    grouped: bool = False
    retry_failed: bool = False


def open_rationales(session: Session, teacher: TeacherConfig, selection: Selection, only: Any = None) -> Any:
    """The SELECT of the selection's open rationales in id order; `checkpoint` keeps those one
    student checkpoint wrote (a round holds rollouts of two). `only` (ids, or a subquery of them)
    replaces the source filter. `limit` keeps the selection's first N rationales, answered ones
    included (as `generate --limit` counts questions), so a re-run with the same limit asks
    nothing new."""
    scope = select(Rationale.id).order_by(Rationale.id)
    scope = (scope.where(Rationale.source == selection.source.value) if only is None
             else scope.where(Rationale.id.in_(only)))
    if selection.round is not None and selection.source is CollectedRationales.student:
        scope = scope.where(Rationale.round == selection.round)
    if selection.checkpoint is not None:
        found = session.exec(select(ModelCheckpoint.id).where(ModelCheckpoint.name == selection.checkpoint)).first()
        if found is None:
            raise TeacherError(f"no checkpoint named {selection.checkpoint!r} in the store")
        scope = scope.where(Rationale.model_checkpoint_id == found)
    if selection.limit is not None:
        scope = scope.limit(selection.limit)
    return (select(Rationale).where(Rationale.id.in_(scope.subquery().select()),
                                    *still_open(selection.kind, teacher, selection.grouped, selection.retry_failed))
            .order_by(Rationale.id))


def select_jobs(session: Session, teacher: TeacherConfig, selection: Selection, only: Any = None,
                exclude: Any = None) -> list[Job]:
    """Open rationales of the selection in id order (`open_rationales`); `exclude` leaves ids out."""
    stmt = open_rationales(session, teacher, selection, only)
    if exclude is not None:
        stmt = stmt.where(Rationale.id.not_in(exclude))
    rationales = list(session.exec(stmt))
    ids = [r.id for r in rationales]
    questions = {q.id: q for q in session.exec(select(Question).where(
        Question.id.in_({r.question_id for r in rationales})))} if ids else {}
    sentences: dict[int, list[Sentence]] = {i: [] for i in ids}
    for chunk in range(0, len(ids), 500):
        part = ids[chunk:chunk + 500]
        for s in session.exec(select(Sentence).where(Sentence.rationale_id.in_(part)).order_by(Sentence.idx)):
            sentences[s.rationale_id].append(s)
    return [Job(r, questions[r.question_id], sentences[r.id]) for r in rationales]


@dataclass(frozen=True)
class GroupCap:
    """The most one grouped call asks about: rationales, and sentences over all of them. A
    larger group is split into consecutive calls (a rationale over the sentence cap goes alone)."""

    rationales: int = 16
    sentences: int = 160

    def __post_init__(self) -> None:
        if self.rationales < 1 or self.sentences < 1:
            raise TeacherError("the group caps must be at least 1")


def jobs_of(session: Session, rationale_ids: list[int]) -> list[Job]:
    """The jobs of these rationales in this order, answered or not (a batch line's rationales)."""
    rows = {r.id: r for r in session.exec(select(Rationale).where(Rationale.id.in_(rationale_ids)))}
    questions = {q.id: q for q in session.exec(select(Question).where(
        Question.id.in_({r.question_id for r in rows.values()})))}
    sentences: dict[int, list[Sentence]] = {i: [] for i in rows}
    for s in session.exec(select(Sentence).where(Sentence.rationale_id.in_(list(rows))).order_by(Sentence.idx)):
        sentences[s.rationale_id].append(s)
    return [Job(rows[i], questions[rows[i].question_id], sentences[i]) for i in rationale_ids if i in rows]


def units(jobs: list[Job], grouped: bool, cap: GroupCap = GroupCap()) -> list[list[Job]]:
    """Units of work: one rationale each, or the rationales of one question (in selection order),
    split where a group would pass `cap`."""
    if not grouped:
        return [[job] for job in jobs]
    by_question: dict[int, list[Job]] = {}
    for job in jobs:
        by_question.setdefault(job.question.id, []).append(job)
    out: list[list[Job]] = []
    for group in by_question.values():
        part: list[Job] = []
        for job in group:
            if part and (len(part) >= cap.rationales
                         or sum(len(j.sentences) for j in part) + len(job.sentences) > cap.sentences):
                out.append(part)
                part = []
            part.append(job)
        out.append(part)
    return out


def claim_unit(claims: Claims, unit: list[Job]) -> tuple[list[Job], list[Job]]:
    """Claim every rationale of a unit: (ours now, held by another live collector); the others
    were answered meanwhile (or wait in a batch) and are dropped."""
    taken: list[Job] = []
    busy: list[Job] = []
    for job in unit:
        claim = claims.take(job.rationale.id)
        if claim is Claim.taken:
            taken.append(job)
        elif claim is Claim.busy:
            busy.append(job)
    return taken, busy


def refused_group(outcome: Outcome, task: Task, jobs: list[Job]) -> list[list[Job]]:
    """The two halves to ask again when the provider refused a call about several rationales
    (one refused rationale must not fail the others); [] otherwise."""
    if outcome.status != CallStatus.failed or outcome.reason != "rejected":
        return []
    left = [job for job in jobs if job.rationale.id in task.rationale_ids()]
    return [left[:len(left) // 2], left[len(left) // 2:]] if len(left) > 1 else []


def score_task(store: Store, jobs: list[Job], grouped: bool = False, points: bool = False) -> Task:
    if grouped:
        return group_task(jobs, points)
    [job] = jobs
    texts = [s.text for s in job.sentences]

    def persist(session: Session, call: TeacherCall, scores: list[float]) -> None:
        weighted = expectations(call.response or "", call.score_logprobs, points)
        done = scored_by(session, call.id)
        for i, (sentence, score) in enumerate(zip(job.sentences, scores)):
            if sentence.id not in done:
                session.add(score_row(sentence.id, call.id, score, lookup(weighted, None, i)))

    return Task("score", SCORE_POINTS if points else SCORE, score_ask(job.question, texts, points),
                lambda text: parse_scores(text, len(texts), points), {"n": len(texts)}, job.question.id,
                job.rationale.id, persist)


def levenshtein(a: str, b: str) -> int:
    """Character edit distance (insertions, deletions, substitutions)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def correct_task(store: Store, jobs: list[Job], grouped: bool = False) -> Task:
    [job] = jobs
    original = job.rationale
    ask = correct_ask(job.question, original.text)
    prompt_texts = [ask.system] + [p["text"] for p in ask.parts if p["type"] == "text"]

    def persist(session: Session, call: TeacherCall, corrected: str) -> None:
        row, created = store.add_rationale(
            session, question_id=original.question_id, source="correction", text=corrected,
            dedup_key=f"correction:{call.id}:{original.id}", model_checkpoint_id=original.model_checkpoint_id,
            parent_rationale_id=original.id, round=original.round, sample_index=original.sample_index)
        if created:
            session.add(Correction(rationale_id=original.id, teacher_call_id=call.id, corrected_rationale_id=row.id,
                                   text=corrected, edit_distance=levenshtein(original.text, corrected)))

    return Task("correct", CORRECT, ask, lambda text: parse_correction(text, original.text, prompt_texts),
                {"rationale": original.text}, job.question.id, original.id, persist)


def builder(kind: str, teacher: TeacherConfig) -> TaskBuilder:
    return functools.partial(score_task, points=in_points(teacher)) if kind == "score" else correct_task
