"""Grouped scoring: the rationales of one question in one call (`collect-scores --group-by-question`).

The request has the single call's shape with its per-call part repeated: the instructions,
the question block once, then each rationale's numbered sentences under a label (R1, R2, ...).
The answer holds one score list per label, each checked exactly like a single call's answer.
The lists that pass are stored at once, linked to that call; the repair re-asks only the rest.
"""

from __future__ import annotations

from typing import Any, Sequence

from sqlmodel import Session, select

from ..errors import InvalidAnswer, PartlyInvalid
from ..tables import SentenceScore, TeacherCall
from .calls import Task
from .logprobs import expectations, lookup, score_row
from .prompts import Ask, fence_code, load, numbered, question_parts, score_items, score_tokens
from .validation import check_scores, extract_json

SCORE_GROUP = "score_group_v1"
SCORE_GROUP_POINTS = "score_group_points_v1"  # whole points 0-10 (--score-from logprobs)


def scored_by(session: Session, call_id: int | None) -> set[int]:
    """The sentences a call already scored (an answer reused later writes only the rest)."""
    return set(session.exec(select(SentenceScore.sentence_id).where(SentenceScore.teacher_call_id == call_id)))


def group_schema(counts: dict[str, int], points: bool = False) -> dict[str, Any]:
    """One list per label, each of exactly its rationale's sentence count, on the 0.1 grid (or points)."""
    lists = {label: {"type": "array", "minItems": n, "maxItems": n, "items": score_items(points)}
             for label, n in counts.items()}
    return {"type": "object", "additionalProperties": False, "required": list(counts), "properties": lists}


def group_ask(question: Any, rationales: Sequence[Sequence[str]], points: bool = False) -> Ask:
    """System and question block first (the cacheable head), then every rationale in one last part."""
    template = load(SCORE_GROUP_POINTS if points else SCORE_GROUP)
    fence = fence_code([sentence for sentences in rationales for sentence in sentences])  # one code per call
    blocks = [template.render("rationale", label=f"R{i}", n=len(sentences), sentences=numbered(sentences),
                              fence=fence)
              for i, sentences in enumerate(rationales, start=1)]
    counts = {f"R{i}": len(s) for i, s in enumerate(rationales, start=1)}
    return Ask(template.render("system"),
               [*question_parts(template, question), {"type": "text", "text": "\n\n".join(blocks)}],
               schema=group_schema(counts, points), schema_name="grouped_sentence_scores",
               max_tokens=score_tokens(sum(counts.values()), len(counts)))


def parse_group(text: str, wanted: dict[str, int], points: bool = False) -> dict[str, list[float]]:
    """The score list of every wanted label; labels not wanted (answered before) are ignored.
    Raises PartlyInvalid (holding the lists that passed) when any wanted list fails."""
    data = extract_json(text, lambda v: isinstance(v, dict) and bool(wanted.keys() & v.keys()), "sets of score lists")
    if not isinstance(data, dict):
        raise InvalidAnswer("no_scores", 'the JSON is not an object of score lists ({"R1": [...], ...})')
    valid: dict[str, list[float]] = {}
    problems: list[tuple[str, str]] = []
    for label, n in wanted.items():
        scores = data.get(label)
        if isinstance(scores, dict):
            scores = scores.get("scores")
        if scores is None:
            problems.append(("no_scores", f"{label}: no score list"))
            continue
        try:
            valid[label] = check_scores(scores, n, points)
        except InvalidAnswer as exc:
            problems.append((exc.code, f"{label}: {exc}"))
    if problems:
        raise PartlyInvalid(problems[0][0], "; ".join(message for _, message in problems), valid)
    return valid


def expected(wanted: dict[str, int]) -> str:
    return ", ".join(f"{label} ({n} scores)" for label, n in wanted.items())


def group_task(jobs: Sequence[Any], points: bool = False) -> Task:
    """One call for `jobs` (rationale, question, sentences) of one question; `points`: whole points."""
    by_label = {f"R{i}": job for i, job in enumerate(jobs, start=1)}
    wanted = {label: len(job.sentences) for label, job in by_label.items()}
    values = {"expected": expected(wanted)}
    covers = [job.rationale.id for job in jobs]

    def persist(session: Session, call: TeacherCall, result: dict[str, list[float]]) -> None:
        weighted = expectations(call.response or "", call.score_logprobs, points)
        done = scored_by(session, call.id)
        for label, scores in result.items():
            for i, (sentence, score) in enumerate(zip(by_label[label].sentences, scores, strict=True)):
                if sentence.id not in done:
                    session.add(score_row(sentence.id, call.id, score, lookup(weighted, label, i)))

    def settle(valid: dict[str, list[float]]) -> None:
        for label in valid:
            if wanted.pop(label, None) is not None:
                covers.remove(by_label[label].rationale.id)
        values["expected"] = expected(wanted)

    ask = group_ask(jobs[0].question, [[s.text for s in job.sentences] for job in jobs], points)
    return Task("score", SCORE_GROUP_POINTS if points else SCORE_GROUP, ask,
                lambda text: parse_group(text, wanted, points), values,
                jobs[0].question.id, None, persist, covers, settle)

