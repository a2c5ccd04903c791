"""Run bookkeeping: `training_run`, `pipeline_run`/`pipeline_stage` and `eval_result` rows.

Every engine (the TRL stages, the loop, the PRM, verl) records its runs through these
functions, so the trainers never write rows themselves; each function is one transaction.
"""

from __future__ import annotations

from typing import Any, Sequence

from sqlmodel import select

from .enums import RunStatus, StageStatus
from .store import Store
from .tables import EvalResult, PipelineRun, PipelineStage, TrainingRun, utcnow

FINISHED = (StageStatus.done, StageStatus.skipped)


def start_training_run(store: Store, *, kind: str, round: int | None, config: dict[str, Any],
                       input_checkpoint_id: int | None, export_id: int | None = None) -> int:
    """A new `training_run` row, status running; its id."""
    with store.session() as session:
        run = TrainingRun(kind=kind, round=round, status=RunStatus.running, config=config,
                          input_checkpoint_id=input_checkpoint_id, export_id=export_id)
        session.add(run)
        session.flush()
        assert run.id is not None  # flushed: the database gave it
        return run.id


def _end_training_run(store: Store, run_id: int, **fields: Any) -> None:
    with store.session() as session:
        run = session.get(TrainingRun, run_id)
        for key, value in {**fields, "finished_at": utcnow()}.items():
            setattr(run, key, value)


def finish_training_run(store: Store, run_id: int, *, metrics: Any, output_checkpoint_id: int) -> None:
    """The run is done: its metrics and the checkpoint it produced."""
    _end_training_run(store, run_id, status=RunStatus.done, metrics=metrics, output_checkpoint_id=output_checkpoint_id)


def fail_training_run(store: Store, run_id: int, error: str) -> None:
    """The run failed with `error` (one line: exception class and message)."""
    _end_training_run(store, run_id, status=RunStatus.failed, error=error)


def start_pipeline_run(store: Store, run_key: str, config: dict[str, Any]) -> int:
    """The `pipeline_run` of `run_key` (created the first time), marked running with `config`; its id."""
    with store.session() as session:
        run = session.exec(select(PipelineRun).where(PipelineRun.run_key == run_key)).first()
        if run is None:
            run = PipelineRun(run_key=run_key, config=config, status=RunStatus.running)
        else:
            run.status, run.config = RunStatus.running, config
        session.add(run)
        session.flush()
        assert run.id is not None  # flushed: the database gave it
        return run.id


def finish_pipeline_run(store: Store, run_id: int, status: str) -> None:
    with store.session() as session:
        run = session.get(PipelineRun, run_id)
        run.status, run.finished_at = status, utcnow()
        session.add(run)


def start_stage(store: Store, run_id: int, round: int, stage: str) -> PipelineStage:
    """The run's `pipeline_stage` row for (`round`, `stage`): as stored when it finished before
    (done or skipped: the caller reuses its outcome), else created or restarted as running."""
    with store.session() as session:
        row = session.exec(select(PipelineStage).where(
            PipelineStage.pipeline_run_id == run_id, PipelineStage.round == round,
            PipelineStage.stage == stage)).first()
        if row is not None and row.status in FINISHED:
            return row
        row = row or PipelineStage(pipeline_run_id=run_id, round=round, stage=stage, status=StageStatus.running)
        row.status, row.error, row.started_at, row.finished_at = StageStatus.running, None, utcnow(), None
        session.add(row)
        session.flush()
        return row


def finish_stage(store: Store, stage_id: int, status: str, outcome: dict[str, Any], error: str | None = None) -> None:
    """The stage ended (done, skipped or failed) with `outcome`."""
    with store.session() as session:
        row = session.get(PipelineStage, stage_id)
        row.status, row.error, row.outcome, row.finished_at = status, error, outcome, utcnow()
        session.add(row)


def add_eval_results(store: Store, rows: Sequence[dict[str, Any]]) -> None:
    """One `eval_result` row per dict of its columns, all in one transaction."""
    with store.session() as session:
        session.add_all(EvalResult(**values) for values in rows)
