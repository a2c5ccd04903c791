"""The store's sentence scores as process supervision: what `ares train prm` learns from and
`ares export prm` writes.

A step is a sentence of a rationale; its label is one teacher's latest `ok` score (the
`v_sentence_labels` view). A rationale counts only when that teacher scored every one of its
sentences; flagged questions are left out. Human labels are not mixed in: a PRM is compared
with the teacher it learned from (`ares agreement`), so it learns from that teacher alone.
Labellers that are themselves PRMs (checkpoints of stage `prm`) are never a teacher here.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from sqlalchemy import column, table
from sqlmodel import Session, select

from .enums import HELD_OUT_SPLITS, CheckpointStage
from .errors import ExportError, TeacherError
from .formatting import student_prompt
from .review.labels import HUMAN, flagged_questions
from .store import Store, _in_chunks
from .tables import ModelCheckpoint, Question, Rationale, Sentence

PRM_STAGE = CheckpointStage.prm
SOURCES = ("gold", "student", "correction")
_LABELS = table("v_sentence_labels", column("rationale_id"), column("sentence_id"), column("labeller"),
                column("score"))


@dataclass
class LabelledRationale:
    """One rationale with a teacher score for each of its sentences."""

    question_id: int
    rationale_id: int
    source: str
    round: int | None
    prompt: str  # the user turn the student answered (formatting.student_prompt)
    text: str
    sentences: list[str]
    ends: list[int]  # character end of each sentence in `text`
    scores: list[float]


def prm_names(session: Session) -> set[str]:
    """Names of the registered PRMs: as labellers they are students of a teacher, not teachers."""
    return set(session.exec(select(ModelCheckpoint.name).where(ModelCheckpoint.stage == PRM_STAGE)))


def find_prm(session: Session, name_or_path: str) -> ModelCheckpoint:
    """A registered PRM by checkpoint name, or by the directory it was saved to."""
    path = Path(name_or_path).expanduser()
    stmt = select(ModelCheckpoint).where(ModelCheckpoint.stage == PRM_STAGE)
    stmt = stmt.where(ModelCheckpoint.path == str(path.resolve())) if path.is_dir() else \
        stmt.where(ModelCheckpoint.name == name_or_path)
    found = session.exec(stmt.order_by(ModelCheckpoint.id.desc())).first()
    if found is None:
        raise TeacherError(f"no PRM {name_or_path!r} in the store: train one with `ares train prm` (the teacher "
                           "model of --provider prm is a checkpoint of stage prm, by name or directory)")
    return found


def choose_teacher(session: Session, teacher: str | None) -> str:
    """`teacher`, or the one teacher that scored sentences in the store; several must be chosen between."""
    labellers = set(session.exec(select(_LABELS.c.labeller).distinct()))
    teachers = sorted(labellers - {HUMAN} - prm_names(session))
    if teacher is not None:
        if teacher not in teachers:
            raise ExportError(f"teacher {teacher!r} scored no sentence in the store "
                              f"(teachers: {', '.join(teachers) or 'none'})")
        return teacher
    if not teachers:
        raise ExportError("no teacher scores in the store: run `ares collect-scores` first")
    if len(teachers) > 1:
        raise ExportError(f"the store holds scores of several teachers ({', '.join(teachers)}); "
                          "choose one with --teacher MODEL")
    return teachers[0]


def labelled_rationales(store: Store, *, teacher: str | None = None, sources: Sequence[str] = ("gold", "student"),
                        rounds: Sequence[int] | None = None) -> tuple[list[LabelledRationale], Counter, str]:
    """(rationales of `sources` fully scored by the teacher, the others counted by reason, the teacher).
    `rounds` keeps student and correction rationales of those rounds (gold ones have no round)."""
    unknown = set(sources) - set(SOURCES)
    if unknown or not sources:
        raise ExportError(f"--sources takes {', '.join(SOURCES)}, not {', '.join(sorted(unknown)) or 'nothing'}")
    with store.session() as session:
        teacher = choose_teacher(session, teacher)
        scores: dict[int, dict[int, float]] = defaultdict(dict)
        for rationale_id, sentence_id, score in session.exec(
                select(_LABELS.c.rationale_id, _LABELS.c.sentence_id, _LABELS.c.score)
                .where(_LABELS.c.labeller == teacher)):
            scores[rationale_id][sentence_id] = float(score)
        rationales = [row[0] for row in _in_chunks(session, select(Rationale), Rationale.id, sorted(scores))]
        sentences: dict[int, list[Sentence]] = defaultdict(list)
        for (s,) in _in_chunks(session, select(Sentence).order_by(Sentence.idx), Sentence.rationale_id,
                               [r.id for r in rationales]):
            sentences[s.rationale_id].append(s)
        questions = {q.id: q for (q,) in _in_chunks(session, select(Question), Question.id,
                                                     sorted({r.question_id for r in rationales}))}
        flagged = flagged_questions(session)
    kept, skipped = [], Counter()
    for r in sorted(rationales, key=lambda r: r.id):
        own = sentences[r.id]
        if r.source not in sources or (rounds is not None and r.source != "gold" and r.round not in rounds):
            continue
        if r.question_id in flagged:
            skipped["flagged_bad"] += 1
        elif questions[r.question_id].split in HELD_OUT_SPLITS:
            skipped["held_out_split"] += 1
        elif not own or any(s.id not in scores[r.id] for s in own):
            skipped["partly_scored"] += 1
        else:
            kept.append(LabelledRationale(
                r.question_id, r.id, r.source, r.round, student_prompt(questions[r.question_id]), r.text,
                [s.text for s in own], [s.end_char for s in own], [scores[r.id][s.id] for s in own]))
    return kept, skipped, teacher
