"""A-OKVQA: the official `aokvqa_v1p0_{train,val,test}.json` files (a JSON list of questions).

Train and val rows carry `correct_choice_idx` and three gold `rationales` (stored with
sample_index 0..2); test rows have neither and import as questions with no answer and no
gold rationale. `direct_answers`, `difficult_direct_answer` and `image_id` go into `metadata`.
Image: COCO 2017, `<split>2017/<image_id:012>.jpg` under `--images DIR`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import ImportDataError
from ..store import Store
from ._common import (Fields, ImportResult, Progress, QuestionRecord, load_json, locate_image, refuse_duplicates,
                      write_records)

DATASET = "aokvqa"


def coco_image(split: str, image_id: int) -> str:
    return f"{split}2017/{image_id:012d}.jpg"


def _record(path: Path, index: int, data: object, images_dir: Optional[Path]) -> QuestionRecord:
    record_id = data.get("question_id", index) if isinstance(data, dict) else index
    f = Fields(path, record_id, data)
    source_id = f.text("question_id", required=True)
    split = f.text("split", required=True)
    image_id = f.integer("image_id", required=True)
    choices = f.strings("choices", required=True, min_items=2)
    answer = f.answer("correct_choice_idx", choices, f.integer("correct_choice_idx"))
    meta = {"image_id": image_id, "direct_answers": f.strings("direct_answers")}
    difficult = f.boolean("difficult_direct_answer")
    if difficult is not None:
        meta["difficult_direct_answer"] = difficult
    image_path, image_sha = locate_image(images_dir, coco_image(split, image_id))
    return QuestionRecord(
        source_id=source_id, split=split, question=f.text("question", required=True), choices=choices,
        answer_index=answer, image_path=image_path, image_sha256=image_sha, meta=meta,
        rationales=f.strings("rationales"),
    )


def read_aokvqa(path: Path, images_dir: Optional[Path] = None) -> list[QuestionRecord]:
    """Validate the file and return the records (nothing is written)."""
    data = load_json(path)
    if not isinstance(data, list):
        raise ImportDataError(str(path), "-", None, "expected a JSON list of questions")
    return refuse_duplicates(path, [_record(path, index, item, images_dir) for index, item in enumerate(data)])


def import_aokvqa(
    store: Store, path: Path, *, images_dir: Optional[Path] = None, progress: Optional[Progress] = None
) -> ImportResult:
    """Import A-OKVQA questions with their gold rationales, in one transaction."""
    return write_records(store, DATASET, read_aokvqa(path, images_dir), progress)
