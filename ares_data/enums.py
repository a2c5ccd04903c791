"""The fixed vocabularies of the store, one str Enum per SQL CHECK list.

The migrations own the lists (`CHECK (status IN (...))`); these mirror them so code compares
against names, not string literals, and a test checks every Enum against the migrated schema
(tests/test_enums.py), so a migration that changes a list fails until its Enum follows.
Members are str: they compare equal to the plain strings read back from the store and bind
as their value in SQL. The columns stay typed `str` in `tables.py` on purpose: SQLAlchemy's
Enum type would store member names, and the SQL files, not SQLAlchemy, own the constraints.
"""

from __future__ import annotations

from enum import Enum


class _Vocabulary(str, Enum):
    """A str Enum whose str() and format() are its value (like 3.11's StrEnum, on 3.10 too)."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class CheckpointStage(_Vocabulary):
    """model_checkpoint.stage: what produced the checkpoint."""

    base = "base"
    rl = "rl"
    sft = "sft"
    prm = "prm"  # a process reward model (`ares train prm`, migration 0016)


class RationaleSource(_Vocabulary):
    """rationale.source: where a rationale came from."""

    gold = "gold"
    student = "student"
    correction = "correction"


class CallKind(_Vocabulary):
    """teacher_call.kind: what the teacher was asked."""

    score = "score"
    correct = "correct"
    judge = "judge"


class CallStatus(_Vocabulary):
    """teacher_call.status: ok (a valid answer), invalid (failed validation), failed / error (no answer)."""

    ok = "ok"
    invalid = "invalid"
    failed = "failed"
    error = "error"


class WorkKind(_Vocabulary):
    """work_claim.kind and teacher_batch.kind: the teacher work a collector claims or batches."""

    score = "score"
    correct = "correct"


class RunKind(_Vocabulary):
    """training_run.kind: the trainer that ran."""

    rl = "rl"
    sft = "sft"
    prm = "prm"  # migration 0016


class RunStatus(_Vocabulary):
    """training_run.status and pipeline_run.status."""

    running = "running"
    done = "done"
    failed = "failed"


class StageStatus(_Vocabulary):
    """pipeline_stage.status: a stage of `ares train` may also have had nothing to do."""

    running = "running"
    done = "done"
    failed = "failed"
    skipped = "skipped"


class EvalKind(_Vocabulary):
    """eval_result.kind."""

    accuracy = "accuracy"
    winrate = "winrate"


class Outcome(_Vocabulary):
    """eval_result.outcome: the result of checkpoint A in a judged pair."""

    win = "win"
    tie = "tie"
    loss = "loss"


class Position(_Vocabulary):
    """eval_result.a_position: where checkpoint A's rationale was shown to the judge."""

    A = "A"
    B = "B"


class LabelKind(_Vocabulary):
    """human_label.kind."""

    score = "score"
    correction = "correction"
    flag = "flag"


class LabelOrigin(_Vocabulary):
    """human_label.origin: the tool a reviewer used."""

    review = "review"
    label_studio = "label-studio"


class AttemptOutcome(_Vocabulary):
    """teacher_attempt.outcome: what one HTTP attempt came to. `timeout`: sent, no answer read
    (maybe billed); `not_sent`: connect or write failed; `network`: dropped after sending;
    `unreadable`: an answer that could not be read."""

    ok = "ok"
    rate_limited = "rate_limited"
    server_error = "server_error"
    client_error = "client_error"
    timeout = "timeout"
    not_sent = "not_sent"
    network = "network"
    unreadable = "unreadable"


# (table, column) -> its Enum, for every CHECK (column IN (...)) of the schema (tests/test_enums.py).
CHECKED_COLUMNS: dict[tuple[str, str], type[_Vocabulary]] = {
    ("model_checkpoint", "stage"): CheckpointStage,
    ("rationale", "source"): RationaleSource,
    ("teacher_call", "kind"): CallKind,
    ("teacher_call", "status"): CallStatus,
    ("work_claim", "kind"): WorkKind,
    ("teacher_batch", "kind"): WorkKind,
    ("training_run", "kind"): RunKind,
    ("training_run", "status"): RunStatus,
    ("pipeline_run", "status"): RunStatus,
    ("pipeline_stage", "status"): StageStatus,
    ("eval_result", "kind"): EvalKind,
    ("eval_result", "outcome"): Outcome,
    ("eval_result", "a_position"): Position,
    ("human_label", "kind"): LabelKind,
    ("human_label", "origin"): LabelOrigin,
    ("teacher_attempt", "outcome"): AttemptOutcome,
}


# Questions of these splits are held out (verl validates on them, `ares eval` tests on them): a
# rationale of one never goes into a training shard (`export rl|sft|prm`), whichever engine wrote it.
HELD_OUT_SPLITS = frozenset({"val", "test"})
