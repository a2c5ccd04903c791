"""Run bookkeeping (`ares_data.runs`): what each engine records, read back from the store."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from ares_data import runs
from ares_data.enums import CheckpointStage, EvalKind, RunKind, RunStatus, StageStatus
from ares_data.tables import EvalResult, PipelineRun, PipelineStage, Question, TrainingRun

pytestmark = pytest.mark.both_backends


@pytest.fixture
def base(store):
    with store.session() as s:
        return store.register_checkpoint(s, name="base", path="/m", base_model="/m", stage=CheckpointStage.base)


def _get(store, table, row_id):
    with store.session() as s:
        return s.get(table, row_id)


def test_training_run_done_and_failed(store, base):
    done = runs.start_training_run(store, kind=RunKind.rl, round=1, config={"lr": 1e-5}, input_checkpoint_id=base.id)
    row = _get(store, TrainingRun, done)
    assert (row.status, row.config, row.finished_at) == (RunStatus.running, {"lr": 1e-5}, None)
    with store.session() as s:
        out = store.register_checkpoint(s, name="round-1-rl", path="/o", base_model="/m", parent_id=base.id,
                                        stage=CheckpointStage.rl)
    runs.finish_training_run(store, done, metrics={"summary": {"steps": 2}}, output_checkpoint_id=out.id)
    row = _get(store, TrainingRun, done)
    assert (row.status, row.metrics, row.output_checkpoint_id, row.error) == (
        RunStatus.done, {"summary": {"steps": 2}}, out.id, None)
    assert row.finished_at is not None

    failed = runs.start_training_run(store, kind=RunKind.prm, round=None, config={}, input_checkpoint_id=base.id)
    runs.fail_training_run(store, failed, "RuntimeError: out of memory")
    row = _get(store, TrainingRun, failed)
    assert (row.status, row.error, row.output_checkpoint_id) == (RunStatus.failed, "RuntimeError: out of memory", None)


def test_pipeline_run_is_resumed_by_key(store):
    first = runs.start_pipeline_run(store, "key1", {"rounds": 1})
    runs.finish_pipeline_run(store, first, RunStatus.failed)
    again = runs.start_pipeline_run(store, "key1", {"rounds": 2})
    other = runs.start_pipeline_run(store, "key2", {})
    assert again == first and other != first
    row = _get(store, PipelineRun, first)
    assert (row.status, row.config) == (RunStatus.running, {"rounds": 2})
    runs.finish_pipeline_run(store, first, RunStatus.done)
    assert _get(store, PipelineRun, first).status == RunStatus.done


def test_stage_restarts_until_finished_then_is_reused(store):
    run = runs.start_pipeline_run(store, "key", {})
    row = runs.start_stage(store, run, 1, "generate")
    assert row.status == StageStatus.running
    runs.finish_stage(store, row.id, StageStatus.failed, {}, "ValueError: bad")
    retry = runs.start_stage(store, run, 1, "generate")
    assert retry.id == row.id and (retry.status, retry.error, retry.finished_at) == (StageStatus.running, None, None)
    runs.finish_stage(store, retry.id, StageStatus.done, {"rationales_added": 3})
    reused = runs.start_stage(store, run, 1, "generate")
    assert (reused.id, reused.status, reused.outcome) == (row.id, StageStatus.done, {"rationales_added": 3})
    assert runs.start_stage(store, run, 2, "generate").id != row.id
    with store.session() as s:
        assert len(s.exec(select(PipelineStage)).all()) == 2


def test_eval_results_are_one_transaction(store, base):
    with store.session() as s:
        q = Question(dataset="d", source_id="1", split="test", question="q", choices=["a", "b"], answer_index=0)
        s.add(q)
    runs.add_eval_results(store, [dict(kind=EvalKind.accuracy, model_checkpoint_id=base.id, question_id=q.id,
                                       split="test", predicted_answer=0, correct=True)])
    with pytest.raises(IntegrityError):  # no such question: the first row is not kept either
        runs.add_eval_results(store, [
            dict(kind=EvalKind.accuracy, model_checkpoint_id=base.id, question_id=q.id, split="test", correct=False),
            dict(kind=EvalKind.accuracy, model_checkpoint_id=base.id, question_id=q.id + 99, split="test")])
    with store.session() as s:
        assert [r.correct for r in s.exec(select(EvalResult))] == [True]
