"""ares_data: the ARES store and everything that fills it (importers, teacher, exporters).

What users may import is listed here; the modules behind it are free to change. Names are
loaded on first use, so importing the package (and `ares --help`) stays fast.

    from ares_data import Store, import_scienceqa, TeacherConfig, collect_scores, export_rl
"""

from importlib import import_module
from typing import Any

_PUBLIC = {
    # store and schema
    "Store": "store", "resolve_url": "store",
    # errors
    "AresError": "errors", "StoreError": "errors", "ReadOnlyError": "errors", "ImportDataError": "errors",
    "SchemaError": "errors", "ImageError": "errors", "TeacherError": "errors", "QuotaError": "errors",
    "InvalidAnswer": "errors", "ExportError": "errors", "ReviewError": "errors", "TrainingError": "errors",
    "MissingExtra": "errors",
    # text
    "split_sentences": "splitter", "Span": "splitter",
    "student_prompt": "formatting", "parse_answer": "formatting",
    # importers
    "import_scienceqa": "importers", "import_aokvqa": "importers", "import_jsonl": "importers",
    "import_example": "importers",
    # teacher
    "TeacherConfig": "teacher", "collect_scores": "teacher", "collect_corrections": "teacher",
    "judge_pair": "teacher",
    # shards, evaluation, report
    "export_rl": "exporters", "export_sft": "exporters", "export_verl": "verl_export", "read_shard": "exporters",
    "win_rate": "evaluation", "write_report": "report",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
