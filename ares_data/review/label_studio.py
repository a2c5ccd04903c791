"""Round trip with Label Studio: tasks out with each teacher's scores as predictions, the
annotated export back in as human labels.

A task carries the rationale's id and sentence ids, so an import checks it still describes the
same rationale. Only values that differ from what the annotator was shown (or from the latest
human label) become rows, so importing a file twice, or a task left as predicted, adds nothing.
A file is imported in one transaction: a bad task names itself and nothing is written.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from ..enums import LabelKind, LabelOrigin, RationaleSource
from ..errors import ReviewError
from ..formatting import letter
from ..store import Store
from ..tables import Rationale, Sentence
from .labels import ReviewItem, check_score, flag_question, record_correction, record_score, review_items

ORIGIN = LabelOrigin.label_studio
# One Number per sentence (Repeater over data.sentences), the correction as a TextArea, a flag.
LABEL_CONFIG = """<View>
  <Header value="$question"/>
  <Text name="choices" value="$choices"/>
  <Text name="answer" value="$answer"/>
  <Image name="image" value="$image"/>
  <Text name="rationale" value="$rationale"/>
  <Repeater on="$sentences" indexFlag="{{idx}}">
    <Text name="sentence_{{idx}}" value="$sentences[{{idx}}].text"/>
    <Number name="score_{{idx}}" toName="sentence_{{idx}}" min="0" max="1" step="0.1"/>
  </Repeater>
  <TextArea name="correction" toName="rationale" value="$correction" editable="true" maxSubmissions="1"/>
  <Choices name="flag" toName="rationale" choice="single">
    <Choice value="bad" hint="The question itself is wrong or unanswerable"/>
  </Choices>
</View>
"""


def _task(item: ReviewItem) -> dict:
    q = item.question
    predictions = [{
        "model_version": teacher,
        "result": [{"id": f"s{s.idx}", "from_name": f"score_{s.idx}", "to_name": f"sentence_{s.idx}",
                    "type": "number", "value": {"number": item.scores[s.id][teacher]}}
                   for s in item.sentences if teacher in item.scores[s.id]],
    } for teacher in item.teachers]
    return {
        "data": {
            "ares_rationale_id": item.rationale.id, "ares_sentence_ids": [s.id for s in item.sentences],
            "question": q.question, "choices": " ".join(f"({letter(i)}) {c}" for i, c in enumerate(q.choices)),
            "answer": letter(q.answer_index) if q.answer_index is not None else "", "image": q.image_path or "",
            "rationale": item.rationale.text, "sentences": [{"text": s.text} for s in item.sentences],
            "correction": item.shown_correction() or "",
        },
        "predictions": predictions,
    }


def export_tasks(store: Store, out: str | Path, round: int | None = None, where: str | None = None) -> int:
    """Write the rationales as Label Studio tasks to `out` (JSON) and the labelling config to
    `out` with suffix .xml; return the task count."""
    tasks = [_task(item) for item in review_items(store, round, where)]
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(tasks, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        out.with_suffix(".xml").write_text(LABEL_CONFIG, encoding="utf-8")
    except OSError as exc:
        raise ReviewError(f"cannot write {out}: {exc}") from exc
    return len(tasks)


def _reviewer(annotation: dict) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    return f"{ORIGIN}:{who if who is not None else 'unknown'}"


def _import_task(session: Session, task: Any, added: Counter) -> None:
    data = task.get("data") if isinstance(task, dict) else None
    rid = data.get("ares_rationale_id") if isinstance(data, dict) else None
    if not isinstance(rid, int):
        raise ReviewError("no data.ares_rationale_id: not a task written by `ares review export`")
    rationale = session.get(Rationale, rid)
    if rationale is None or rationale.source != RationaleSource.student:
        raise ReviewError(f"rationale {rid} is not a student rationale in this store")
    ids = list(session.exec(select(Sentence.id).where(Sentence.rationale_id == rid).order_by(Sentence.idx)))
    if data.get("ares_sentence_ids") != ids:
        raise ReviewError(f"its sentence ids do not match rationale {rid} in this store")
    shown = {r.get("from_name"): r.get("value", {}).get("number")
             for r in (task.get("predictions") or [{}])[0].get("result", [])}
    for annotation in task.get("annotations") or []:
        if annotation.get("was_cancelled"):
            continue
        reviewer = _reviewer(annotation)
        for result in annotation.get("result") or []:
            name, value = result.get("from_name", ""), result.get("value") or {}
            if name.startswith("score_") and name[6:].isdigit() and int(name[6:]) < len(ids):
                score = check_score(value.get("number"), name)
                row = record_score(session, sentence_id=ids[int(name[6:])], score=score, reviewer=reviewer,
                                   origin=ORIGIN, shown=shown.get(name), only_changes=True)
            elif name == "correction" and isinstance(value.get("text"), list):
                row = record_correction(session, rationale_id=rid, text="\n".join(value["text"]), reviewer=reviewer,
                                        origin=ORIGIN, shown=data.get("correction"), only_changes=True)
            elif name == "flag" and isinstance(value.get("choices"), list):
                row = flag_question(session, question_id=rationale.question_id, bad=True, reviewer=reviewer,
                                    origin=ORIGIN) if "bad" in value["choices"] else None
            else:
                raise ReviewError(f"unknown or malformed result {name or '(no from_name)'!r}")
            if row is not None:
                added[row.kind] += 1


def import_annotations(store: Store, file: str | Path) -> Counter:
    """Label Studio's JSON export of our tasks -> human labels; returns how many of each kind were added."""
    try:
        tasks = json.loads(Path(file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReviewError(f"{file}: cannot read a Label Studio JSON export: {exc}") from exc
    if not isinstance(tasks, list):
        raise ReviewError(f"{file}: not a Label Studio JSON export (expected a list of tasks)")
    added: Counter = Counter({kind: 0 for kind in LabelKind})
    with store.session() as session:
        for n, task in enumerate(tasks):
            name = f"task {task.get('id', n) if isinstance(task, dict) else n}"
            try:
                _import_task(session, task, added)
            except ReviewError as exc:
                raise ReviewError(f"{file}: {name}: {exc}") from exc
    return added
