"""Shards: which rollouts and corrections go in, what is counted out, and that `datasets` reads them."""

import hashlib
import json
from pathlib import Path

import pytest
from datasets import load_dataset
from sqlmodel import select

from ares_data.errors import ExportError
from ares_data.exporters import export_rl, export_sft
from ares_data.tables import Export

pytestmark = pytest.mark.both_backends  # every importer / exporter also runs on PostgreSQL
TEXT = "Two is divisible by two. So it is even. The answer is (A)."


def _load(export: Export) -> list[dict]:
    return load_dataset("parquet", data_files=str(Path(export.path) / "data.parquet"), split="train").to_list()


@pytest.fixture
def round_one(feedback):
    """Five rollouts of round 1: scored, scored with a wrong count, failed, never scored, and one of round 2."""
    q1, q2 = feedback.question(2), feedback.question(3, answer=1)
    scored = feedback.rollout(q1, TEXT)
    feedback.score(scored, [0.9, 0.6, 1.0])
    mismatch = feedback.rollout(q1, TEXT, index=1)
    feedback.score(mismatch, [0.9, 0.6])
    failed = feedback.rollout(q2, "Three is odd. The answer is (B).")
    feedback.score(failed, [], status="failed")
    feedback.rollout(q2, "Three is odd.", index=1)
    feedback.score(feedback.rollout(q2, TEXT, round=2), [0.1, 0.1, 0.1])
    return scored


def test_export_rl_keeps_fully_scored_rollouts_and_counts_the_rest(store, round_one):
    export = export_rl(store, 1)
    assert export.row_count == 1
    assert export.skipped == {"score_count_mismatch": 1, "scoring_failed": 1, "unscored": 1}
    [row] = _load(export)
    assert row["rationale_id"] == round_one.id and row["round"] == 1
    assert row["scores"] == [0.9, 0.6, 1.0] and row["teacher_model"] == "teacher-a"
    sentences = [row["response"][a:b] for a, b in zip(row["sentence_starts"], row["sentence_ends"])]
    assert sentences == ["Two is divisible by two.", "So it is even.", "The answer is (A)."]
    assert row["prompt"].startswith("Question: Is 2 even?") and "(A) yes (B) no" in row["prompt"]

    parquet = Path(export.path) / "data.parquet"
    manifest = json.loads((Path(export.path) / "manifest.json").read_text())
    digest = "sha256:" + hashlib.sha256(parquet.read_bytes()).hexdigest()
    assert export.content_hash == manifest["content_hash"] == digest
    assert manifest["row_count"] == 1 and manifest["skipped"] == export.skipped
    with store.session() as session:
        stored = session.exec(select(Export)).one()
    assert stored.kind == "rl" and stored.round == 1 and "sentence_score" in stored.query
    assert stored.code_version.startswith("0.1.0")
    assert Path(stored.path).parent.name == "shards"  # default dir under $ARES_HOME


def test_several_teachers_must_be_chosen(store, feedback, round_one):
    feedback.score(round_one, [0.2, 0.2, 0.2], model="teacher-b")
    with pytest.raises(ExportError, match="several teachers.*--teacher"):
        export_rl(store, 1)
    export = export_rl(store, 1, teacher="teacher-b")
    assert [r["scores"] for r in _load(export)] == [[0.2, 0.2, 0.2]]
    assert export.skipped["other_teacher"] == 1  # the wrong-count rollout was scored by teacher-a only


def test_export_sft_ends_every_completion_with_the_answer(store, feedback):
    q = feedback.question(3, answer=1)
    rollout = feedback.rollout(q, "Three three is odd odd.")
    feedback.correct(rollout, "Three is odd.")
    feedback.correct(rollout, "Three is odd. The answer is (B).")
    feedback.rollout(q, "Not corrected.", index=1)
    export = export_sft(store, 1)
    rows = _load(export)
    assert [r["completion"] for r in rows] == ["Three is odd. The answer is (B)."] * 2
    assert {r["source_rationale_id"] for r in rows} == {rollout.id}
    assert rows[0]["prompt"].startswith("Question: Is 3 even?")
    assert export.row_count == 2 and export.skipped == {}


def test_export_sft_rows_follow_the_rollouts_not_the_order_the_teacher_answered_in(store, feedback):
    """Concurrent collectors store corrections as answers arrive; the shard (so SFT's batches) must not
    depend on it, or a rerun trains on another order."""
    q = feedback.question(3, answer=1)
    first, second = feedback.rollout(q, "Three is even."), feedback.rollout(q, "Three is two.", index=1)
    feedback.correct(second, "Three is odd. The answer is (B).")  # answered first
    feedback.correct(first, "Three is not even. The answer is (B).")
    assert [r["source_rationale_id"] for r in _load(export_sft(store, 1))] == [first.id, second.id]


def test_empty_export_is_refused_in_one_line(cli, feedback):
    feedback.rollout(feedback.question(1), "Unscored.")
    result = cli("export", "rl", "--round", "1")
    assert result.exit_code == 1
    assert "nothing to export for rl round 1 (1 unscored)" in result.stderr
    result = cli("export", "sft", "--round", "1")
    assert result.exit_code == 1 and "no candidates" in result.stderr


def test_export_cli_prints_counts(cli, round_one, tmp_path):
    result = cli("export", "rl", "--round", "1", "--out", tmp_path / "rl")
    assert result.exit_code == 0, result.output
    assert "1 rl rows" in result.stdout and "1 score_count_mismatch" in result.stdout
    assert (tmp_path / "rl" / "manifest.json").is_file()
