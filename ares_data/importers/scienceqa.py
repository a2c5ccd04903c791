"""ScienceQA: the official `problems.json`, `pid_splits.json` and (optional) `captions.json`.

- The split comes from the split file's `train`/`val`/`test` lists; the derived lists
  (`trainval`, `minitrain`, `minival`, `minitest`) are subsets of those and are ignored. A
  problem the split file does not list keeps the `split` stored in the problem itself.
- The gold rationale is the lecture, a blank line, then the solution (either may be empty;
  none when both are). The blank line always ends a sentence, so the lecture's last sentence
  never merges with the solution's first. Lecture and solution also stay in their own columns.
- `topic`, `category`, `skill` and `task` go into `metadata`; the machine caption (captions
  file) into `caption`; the hint into `hint`.
- Image: `<split>/<pid>/<image>` (the official `images/` layout). With `--images DIR` and that
  file present, the absolute path and its sha256 are stored; otherwise the relative path with
  a NULL sha256.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import ImportDataError
from ..store import Store
from ._common import Fields, ImportResult, Progress, QuestionRecord, load_json, locate_image, write_records

DATASET = "scienceqa"
SPLITS = ("train", "val", "test")
METADATA_KEYS = ("topic", "category", "skill", "task")


def gold_rationale(lecture: str, solution: str) -> str:
    """Lecture, blank line, solution: the one text that becomes the gold rationale."""
    return "\n\n".join(part.strip() for part in (lecture, solution) if part.strip())


def _read_splits(path: Path) -> dict[str, str]:
    data = load_json(path)
    if not isinstance(data, dict):
        raise ImportDataError(str(path), "-", None, "expected an object {split: [pid, ...]}")
    by_pid: dict[str, str] = {}
    for split in SPLITS:
        for pid in Fields(path, split, data).strings(split):
            by_pid.setdefault(pid, split)
    return by_pid


def _read_captions(path: Path) -> dict[str, str]:
    """The official file nests them under "captions"; a plain {pid: caption} object works too."""
    data = load_json(path)
    captions = data.get("captions", data) if isinstance(data, dict) else data
    if not isinstance(captions, dict) or not all(isinstance(v, str) for v in captions.values()):
        raise ImportDataError(str(path), "captions", None, "expected an object {pid: caption}")
    return captions


def _record(path: Path, pid: str, data: object, splits: dict[str, str], captions: dict[str, str],
            images_dir: Optional[Path]) -> QuestionRecord:
    f = Fields(path, pid, data)
    question = f.text("question", required=True)
    choices = f.strings("choices", required=True, min_items=2)
    answer = f.answer("answer", choices, f.integer("answer", required=True))
    split = splits.get(pid) or f.text("split", default=None)
    if not split:
        raise f.error("split", "not in the split file and not in the problem")
    image_name = f.text("image", default=None)
    image_path, image_sha = (None, None)
    if image_name:
        image_path, image_sha = locate_image(images_dir, f"{split}/{pid}/{image_name}")
    lecture, solution = f.text("lecture"), f.text("solution")
    meta = {key: f.text(key) for key in METADATA_KEYS if key in f.data}
    rationale = gold_rationale(lecture, solution)
    return QuestionRecord(
        source_id=pid, split=split, question=question, choices=choices, answer_index=answer,
        hint=f.text("hint"), caption=captions.get(pid, ""), image_path=image_path,
        image_sha256=image_sha, lecture=lecture, solution=solution,
        subject=f.text("subject", default=None), grade=f.text("grade", default=None),
        meta=meta or None, rationales=[rationale] if rationale else [],
    )


def read_scienceqa(
    problems: Path, splits: Path, captions: Optional[Path] = None, images_dir: Optional[Path] = None
) -> list[QuestionRecord]:
    """Validate the files and return the records (nothing is written)."""
    data = load_json(problems)
    if not isinstance(data, dict):
        raise ImportDataError(str(problems), "-", None, "expected an object {pid: problem}")
    by_pid = _read_splits(splits)
    caption_map = _read_captions(captions) if captions else {}
    return [_record(problems, pid, problem, by_pid, caption_map, images_dir) for pid, problem in data.items()]


def import_scienceqa(
    store: Store,
    problems: Path,
    splits: Path,
    *,
    captions: Optional[Path] = None,
    images_dir: Optional[Path] = None,
    progress: Optional[Progress] = None,
) -> ImportResult:
    """Import ScienceQA problems with their gold rationales, in one transaction."""
    return write_records(store, DATASET, read_scienceqa(problems, splits, captions, images_dir), progress)
