"""The generic JSON Lines format for users' own data (documented in docs/sql.md).

One JSON object per line (blank lines are skipped):

    {"id": "q1", "question": "...", "choices": ["...", "..."], "answer": "B",
     "context": "...", "image": "img/q1.png", "rationale": "...", "split": "train"}

Required: `id` (string or integer), `question`, `choices` (2+ strings). Optional: `answer`
(0-based index or a letter), `context` (stored as the hint), `image` (relative paths are
resolved against the file's folder; hashed when the file exists), `rationale` (a string or a
list of strings: gold rationales, sample_index 0, 1, ...), `split` (default `train`),
`lecture`, `caption`, `subject`, `grade`, and `metadata` (an object).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Optional

from ..errors import ImportDataError
from ..formatting import LETTERS
from ..store import Store
from ._common import (Fields, ImportResult, Progress, QuestionRecord, locate_image, refuse_duplicates, write_records)

EXAMPLE_DATASET = "science_demo"


def example_path() -> Path:
    """The project's own example set, shipped inside the package."""
    return Path(str(resources.files("ares_data") / "examples" / f"{EXAMPLE_DATASET}.jsonl"))


def _answer(f: Fields, choices: list[str]) -> Optional[int]:
    value = f.data.get("answer")
    if isinstance(value, str):
        letter = value.strip().strip("()").upper()
        if len(letter) != 1 or letter not in LETTERS:
            raise f.error("answer", f"expected an index or a letter, got {value!r}")
        return f.answer("answer", choices, LETTERS.index(letter))
    return f.answer("answer", choices, f.integer("answer"))


def _record(path: Path, line: int, data: object) -> QuestionRecord:
    f = Fields(path, f"line {line}", data)
    raw_id = f.data.get("id")
    source_id: str | None
    if isinstance(raw_id, int) and not isinstance(raw_id, bool):
        source_id = str(raw_id)
    else:
        source_id = f.text("id", required=True)
    choices = f.strings("choices", required=True, min_items=2)
    rationale = f.data.get("rationale")
    rationales = [f.text("rationale")] if isinstance(rationale, str) else f.strings("rationale")
    image = f.text("image", default=None)
    image_path, image_sha = locate_image(path.parent, image) if image else (None, None)
    return QuestionRecord(
        source_id=source_id, split=f.text("split", default="train"),
        question=f.text("question", required=True), choices=choices, answer_index=_answer(f, choices),
        hint=f.text("context"), caption=f.text("caption"), image_path=image_path, image_sha256=image_sha,
        lecture=f.text("lecture"), subject=f.text("subject", default=None),
        grade=f.text("grade", default=None), meta=f.mapping("metadata"), rationales=rationales,
    )


def read_jsonl(path: Path) -> list[QuestionRecord]:
    """Validate the file and return the records (nothing is written)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportDataError(str(path), "-", None, f"cannot read: {exc}") from exc
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ImportDataError(str(path), f"line {number}", None,
                                  f"not valid JSON: {exc.msg} (column {exc.colno})") from exc
        records.append(_record(path, number, data))
    return refuse_duplicates(path, records)


def import_jsonl(
    store: Store, path: Path, *, dataset: Optional[str] = None, progress: Optional[Progress] = None
) -> ImportResult:
    """Import a generic JSONL file as `dataset` (default: the file name without extension)."""
    path = Path(path)
    return write_records(store, dataset or path.stem, read_jsonl(path), progress)


def import_example(store: Store) -> ImportResult:
    """Import the built-in example set (what `make demo` uses)."""
    return import_jsonl(store, example_path(), dataset=EXAMPLE_DATASET)
