"""Importers: one module per source, each validating its whole file before one transaction.

    scienceqa  official problems.json + pid_splits.json (+ captions.json, images/)
    aokvqa     official aokvqa_v1p0_<split>.json (+ COCO 2017 images)
    jsonl      the generic format for users' own data, and the built-in example set
"""

from ._common import ImportResult, QuestionRecord
from .aokvqa import import_aokvqa, read_aokvqa
from .jsonl import example_path, import_example, import_jsonl, read_jsonl
from .scienceqa import gold_rationale, import_scienceqa, read_scienceqa

__all__ = [
    "ImportResult", "QuestionRecord", "example_path", "gold_rationale", "import_aokvqa", "import_example",
    "import_jsonl", "import_scienceqa", "read_aokvqa", "read_jsonl", "read_scienceqa",
]
