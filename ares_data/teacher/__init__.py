"""The teacher: async client, versioned prompts, validation, collectors and the pairwise judge.

Names are imported on first use, so the CLI can read `teacher.config` without loading
httpx and SQLModel for `ares --help`.
"""

from importlib import import_module
from typing import Any

_PUBLIC = {
    "CallRunner": "calls", "Task": "calls", "TeacherClient": "client",
    "CollectRequest": "collect", "CollectSummary": "collect", "OnlineSummary": "collect", "DryRunSummary": "collect",
    "BatchSummary": "collect", "CollectProgress": "collect", "collect": "collect", "collect_scores": "collect",
    "collect_corrections": "collect", "Answerer": "calls", "online": "calls",
    "Provider": "config", "CollectedRationales": "config", "StructuredOutput": "config", "TeacherConfig": "config",
    "judge_pair": "judge",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
