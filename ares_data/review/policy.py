"""The export policy: a light module, so the CLI can offer its choices without opening a store."""

from enum import Enum


class ScorePolicy(str, Enum):
    """Which labels become rewards: a human label where there is one, else the teacher's
    (`human-first`); the teacher's only (`teacher`); the mean of every teacher's (`mean`)."""

    human_first = "human-first"
    teacher = "teacher"
    mean = "mean"
