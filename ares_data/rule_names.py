"""The names `ares fake-teacher` takes for its rule judge and its profile, kept apart from
`judges` and `teacher_profiles` so that `ares --help` lists them without importing the task's
parser."""

from __future__ import annotations

from enum import Enum


class JudgeName(str, Enum):
    """A rule judge (`judges.py`)."""

    arith = "arith"
    outcome = "outcome"
    gold = "gold"


class ProfileName(str, Enum):
    """How fallible the judge is (`teacher_profiles.py`)."""

    exact = "exact"
    llm = "llm"
    sparse = "sparse"
