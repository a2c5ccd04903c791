"""Human labels: every change a reviewer makes is a new `human_label` row, never an edit of a
teacher's row. The latest row of a kind and target (sentence, rationale, question) is in force.

`review_items` gathers what a reviewer looks at (question, sentences, every labeller's score,
the teacher's correction); the TUI and the Label Studio export both read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from sqlalchemy import column, func, table
from sqlmodel import Session, select

from ..enums import LabelKind, LabelOrigin
from ..errors import ReviewError, StoreError
from ..store import Store, _in_chunks
from ..tables import Correction, HumanLabel, Question, Rationale, Sentence, TeacherCall

HUMAN = "human"  # the labeller name of human scores in v_sentence_labels and agreement tables
ORIGINS = tuple(LabelOrigin)
_LABELS = table("v_sentence_labels", column("rationale_id"), column("sentence_id"), column("labeller"), column("score"))


@dataclass
class ReviewItem:
    """One student rationale as a reviewer sees it."""

    rationale: Rationale
    question: Question
    sentences: list[Sentence]
    scores: dict[int, dict[str, float]]  # sentence id -> labeller (teacher model or 'human') -> score
    correction: Optional[str] = None  # the teacher's latest correction
    correction_model: Optional[str] = None
    human_correction: Optional[str] = None
    flagged: bool = False
    teachers: list[str] = field(default_factory=list)

    def teacher_score(self, sentence_id: int) -> Optional[float]:
        """The score of the first teacher (by name) that scored this sentence."""
        per = self.scores.get(sentence_id, {})
        return next((per[t] for t in self.teachers if t in per), None)

    def shown_correction(self) -> Optional[str]:
        return self.human_correction if self.human_correction is not None else self.correction


def check_score(score: float, what: str) -> float:
    """A score on the 0.1 grid of [0, 1], or a ReviewError naming `what`."""
    try:
        value = float(score)
    except (TypeError, ValueError):
        raise ReviewError(f"{what}: score {score!r} is not a number") from None
    if not 0.0 <= value <= 1.0 or abs(value * 10 - round(value * 10)) > 1e-6:
        raise ReviewError(f"{what}: score {score!r} is not between 0 and 1 in steps of 0.1")
    return round(value, 1)


def _latest(session: Session, kind: str, target: Any, ids: Iterable[int] | None = None) -> list[HumanLabel]:
    latest = select(func.max(HumanLabel.id)).where(HumanLabel.kind == kind).group_by(target)
    if ids is not None:
        latest = latest.where(target.in_(list(ids)))
    return list(session.exec(select(HumanLabel).where(HumanLabel.id.in_(latest))))


def human_scores(session: Session, sentence_ids: Iterable[int] | None = None) -> dict[int, float]:
    """sentence id -> the score of its latest human label."""
    return {h.sentence_id: h.new_score for h in _latest(session, LabelKind.score, HumanLabel.sentence_id, sentence_ids)}


def human_corrections(session: Session, rationale_ids: Iterable[int] | None = None) -> dict[int, HumanLabel]:
    """student rationale id -> its latest human correction."""
    return {h.rationale_id: h for h in _latest(session, LabelKind.correction, HumanLabel.rationale_id, rationale_ids)}


def flagged_questions(session: Session) -> set[int]:
    """Questions whose latest flag says 'bad'."""
    return {h.question_id for h in _latest(session, LabelKind.flag, HumanLabel.question_id) if h.new_text == "bad"}


def _add(session: Session, **values: Any) -> HumanLabel:
    if values["origin"] not in ORIGINS:
        raise ReviewError(f"unknown label origin {values['origin']!r}")
    row = HumanLabel(**values)
    session.add(row)
    session.flush()
    return row


def record_score(session: Session, *, sentence_id: int, score: float, reviewer: str, origin: str = LabelOrigin.review,
                 shown: float | None = None, only_changes: bool = False) -> HumanLabel | None:
    """A human score for a sentence; `shown` is the teacher score the reviewer saw. Nothing is
    written when the sentence's latest human score is already `score`, nor (`only_changes`) when
    it equals what was shown."""
    sentence = session.get(Sentence, sentence_id)
    if sentence is None:
        raise ReviewError(f"sentence {sentence_id} is not in the store")
    score = check_score(score, f"sentence {sentence_id}")
    current = human_scores(session, [sentence_id]).get(sentence_id)
    old = current if current is not None else shown
    if current == score or (only_changes and old is not None and round(old, 1) == score):
        return None
    rationale = session.get(Rationale, sentence.rationale_id)
    return _add(session, kind=LabelKind.score, question_id=rationale.question_id, rationale_id=rationale.id,
                sentence_id=sentence_id, old_score=old, new_score=score, reviewer=reviewer, origin=origin)


def record_correction(session: Session, *, rationale_id: int, text: str, reviewer: str,
                      origin: str = LabelOrigin.review, shown: str | None = None,
                      only_changes: bool = False) -> HumanLabel | None:
    """A human correction of a student rationale, with the same no-op rules as `record_score`."""
    rationale = session.get(Rationale, rationale_id)
    if rationale is None:
        raise ReviewError(f"rationale {rationale_id} is not in the store")
    if not text.strip():
        raise ReviewError(f"rationale {rationale_id}: a correction cannot be empty")
    found = human_corrections(session, [rationale_id]).get(rationale_id)
    current = found.new_text if found else None
    old = current if current is not None else shown
    if current == text or (only_changes and old == text):
        return None
    return _add(session, kind=LabelKind.correction, question_id=rationale.question_id, rationale_id=rationale_id,
                old_text=old, new_text=text, reviewer=reviewer, origin=origin)


def flag_question(session: Session, *, question_id: int, bad: bool, reviewer: str,
                  origin: str = LabelOrigin.review) -> HumanLabel | None:
    """Mark a question bad (its rollouts leave every export) or good again."""
    value = "bad" if bad else "ok"
    if (question_id in flagged_questions(session)) == bad:
        return None
    return _add(session, kind=LabelKind.flag, question_id=question_id, old_text="ok" if bad else "bad", new_text=value,
                reviewer=reviewer, origin=origin)


def _rationale_ids(store: Store, round: int | None, where: str | None) -> list[int]:
    """Run on a read-only connection: `where` is the user's SQL."""
    sql = "SELECT r.id FROM rationale r JOIN question q ON q.id = r.question_id WHERE r.source = 'student'"
    if round is not None:
        sql += " AND r.round = :round"
    if where:
        sql += f" AND ({where})"
    try:
        return [rid for (rid,) in store.query_readonly(sql + " ORDER BY r.id", {"round": round})[1]]
    except StoreError as exc:
        raise ReviewError(f"--filter {where!r}: {exc}") from exc


def review_items(store: Store, round: int | None = None, where: str | None = None) -> list[ReviewItem]:
    """The student rationales to review, oldest first; `where` is SQL over `r` (rationale) and
    `q` (question), e.g. "q.split = 'train' AND r.sample_index = 0"."""
    ids = _rationale_ids(store, round, where)
    with store.session() as session:
        rows = dict(_in_chunks(session, select(Rationale.id, Rationale), Rationale.id, ids))
        questions = {q.id: q for q in session.exec(select(Question).where(
            Question.id.in_(select(Rationale.question_id).where(Rationale.id.in_(ids)))))} if ids else {}
        sentences: dict[int, list[Sentence]] = {}
        for (s,) in _in_chunks(session, select(Sentence).order_by(Sentence.idx), Sentence.rationale_id, ids):
            sentences.setdefault(s.rationale_id, []).append(s)
        labels = _in_chunks(session, select(_LABELS.c.sentence_id, _LABELS.c.labeller, _LABELS.c.score),
                            _LABELS.c.rationale_id, ids)
        corrections = _in_chunks(session, select(Correction.rationale_id, Correction.text, TeacherCall.model)
                                 .join(TeacherCall, TeacherCall.id == Correction.teacher_call_id)
                                 .order_by(Correction.id), Correction.rationale_id, ids)
        humans = human_corrections(session, ids)
        flagged = flagged_questions(session)
    scores: dict[int, dict[str, float]] = {}
    for sentence_id, labeller, score in labels:
        scores.setdefault(sentence_id, {})[labeller] = float(score)
    latest_correction = {rid: (body, model) for rid, body, model in corrections}  # ordered by id: last wins
    items = []
    for rid in ids:
        rationale = rows[rid]
        own = sentences.get(rid, [])
        per = {s.id: scores.get(s.id, {}) for s in own}
        body, model = latest_correction.get(rid, (None, None))
        items.append(ReviewItem(
            rationale, questions[rationale.question_id], own, per, body, model,
            humans[rid].new_text if rid in humans else None, rationale.question_id in flagged,
            sorted({name for p in per.values() for name in p if name != HUMAN}),
        ))
    return items
