"""What every importer shares: typed field access with precise errors, images, the one write.

An importer reads and validates its whole file into `QuestionRecord`s first, then writes them
in one `store.session()` transaction: a bad file imports nothing, and a re-run adds nothing
(questions are keyed by dataset + source id, gold rationales by `gold:<dataset>:<id>:<n>`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from ..errors import ImportDataError
from ..store import Store

# Wraps the record loop to show progress (the CLI passes a rich progress bar); gets the total.
Progress = Callable[[Iterable, int], Iterable]
BATCH = 200  # records per bulk insert: the progress bar moves once per batch


@dataclass
class QuestionRecord:
    """One validated question and its gold rationales, ready to be written."""

    source_id: str
    split: str
    question: str
    choices: list[str]
    answer_index: Optional[int] = None
    hint: str = ""
    caption: str = ""
    image_path: Optional[str] = None
    image_sha256: Optional[str] = None
    lecture: str = ""
    solution: str = ""
    subject: Optional[str] = None
    grade: Optional[str] = None
    meta: Optional[dict] = None
    rationales: list[str] = field(default_factory=list)


@dataclass
class ImportResult:
    dataset: str
    new_questions: int = 0
    new_rationales: int = 0
    already_present: int = 0

    def __str__(self) -> str:
        return (f"{self.new_questions} new questions, {self.new_rationales} new gold rationales "
                f"({self.already_present} already present)")


def _type_name(value: Any) -> str:
    if isinstance(value, list):
        odd = [v for v in value if not isinstance(v, str)]
        return f"a list holding {_type_name(odd[0])}" if odd else "a list"
    return "null" if value is None else type(value).__name__


class Fields:
    """Typed access to one input record; every problem names the file, the record and the field."""

    def __init__(self, file: Path, record: object, data: Any):
        self.file, self.record = file, record
        if not isinstance(data, dict):
            raise self.error(None, f"expected a JSON object, got {_type_name(data)}")
        self.data = data

    def error(self, name: str | None, problem: str) -> ImportDataError:
        return ImportDataError(str(self.file), self.record, name, problem)

    def _typed(self, name: str, required: bool, ok: Callable[[Any], bool], expected: str) -> Any:
        value = self.data.get(name)
        if value is None:
            if required:
                raise self.error(name, "missing" if name not in self.data else "is null")
            return None
        if not ok(value):
            raise self.error(name, f"expected {expected}, got {_type_name(value)}")
        return value

    def text(self, name: str, *, required: bool = False, default: Optional[str] = "") -> Optional[str]:
        value = self._typed(name, required, lambda v: isinstance(v, str), "a string")
        return default if value is None else value

    def integer(self, name: str, *, required: bool = False) -> Optional[int]:
        return self._typed(name, required, lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer")

    def boolean(self, name: str) -> Optional[bool]:
        return self._typed(name, False, lambda v: isinstance(v, bool), "true or false")

    def mapping(self, name: str) -> Optional[dict]:
        return self._typed(name, False, lambda v: isinstance(v, dict), "an object")

    def strings(self, name: str, *, required: bool = False, min_items: int = 0) -> list[str]:
        is_strings = lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v)  # noqa: E731
        value = self._typed(name, required, is_strings, "a list of strings") or []
        if len(value) < min_items:
            raise self.error(name, f"expected at least {min_items} items, got {len(value)}")
        return value

    def answer(self, name: str, choices: list[str], value: Any) -> Optional[int]:
        """An option index within `choices` (already type-checked by the caller)."""
        if value is not None and not 0 <= value < len(choices):
            raise self.error(name, f"index {value} is outside the {len(choices)} choices")
        return value


def load_json(path: Path) -> Any:
    """The parsed file; unreadable or malformed JSON becomes an `ImportDataError`."""
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportDataError(str(path), "-", None, f"cannot read: {exc}") from exc
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ImportDataError(str(path), f"at line {exc.lineno}", None,
                              f"not valid JSON: {exc.msg} (column {exc.colno})") from exc


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def locate_image(images_dir: Optional[Path], relative: str) -> tuple[str, Optional[str]]:
    """(absolute path, sha256) when `images_dir/relative` exists, else (`relative`, None).

    A relative path with a NULL sha means "expected under the dataset's image folder, not
    seen at import time": the question still imports and text-only stages can use it.
    """
    if images_dir is not None:
        candidate = Path(images_dir) / relative
        if candidate.is_file():
            return str(candidate.resolve()), sha256_file(candidate)
    return relative, None


def refuse_duplicates(path: Path, records: list[QuestionRecord]) -> list[QuestionRecord]:
    """The records, unless two share a source id (the second would silently be dropped)."""
    seen: set[str] = set()
    for record in records:
        if record.source_id in seen:
            raise ImportDataError(str(path), record.source_id, None, "duplicate id in this file")
        seen.add(record.source_id)
    return records


def write_records(
    store: Store, dataset: str, records: list[QuestionRecord], progress: Optional[Progress] = None
) -> ImportResult:
    """Write validated records in one transaction, in batches; rows that exist are left alone."""
    result = ImportResult(dataset)
    batches = [records[i:i + BATCH] for i in range(0, len(records), BATCH)]
    loop: Iterable[list[QuestionRecord]] = progress(batches, len(batches)) if progress else batches
    with store.session() as session:
        for batch in loop:
            rows = [asdict(record) for record in batch]
            for row in rows:
                del row["rationales"]
            ids = store.add_questions(session, dataset, rows)
            created = sum(ids[r.source_id][1] for r in batch)
            result.new_questions += created
            result.already_present += len(batch) - created
            result.new_rationales += store.add_rationales(session, [
                {"question_id": ids[r.source_id][0], "source": "gold", "text": text, "sample_index": index,
                 "dedup_key": f"gold:{dataset}:{r.source_id}:{index}"}
                for r in batch for index, text in enumerate(r.rationales) if text.strip()
            ])
    return result
