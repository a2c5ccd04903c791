"""The export choices: a light module, so the CLI can offer them without importing the store."""

from enum import Enum


class ScorePolicy(str, Enum):
    """Which labels become rewards: a human label where there is one, else the teacher's
    (`human-first`); the teacher's only (`teacher`); the mean of every teacher's (`mean`)."""

    human_first = "human-first"
    teacher = "teacher"
    mean = "mean"


class PRMFormat(str, Enum):
    """Process-supervision layouts other trainers read."""

    stepwise = "stepwise"  # TRL's stepwise supervision: prompt, completions (steps), labels (bools)
    math_shepherd = "math-shepherd"  # Math-Shepherd: steps tagged `ки` in `input`, `+`/`-` in `label`
