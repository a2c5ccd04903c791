"""Export policy: which labels become rewards (human-first, one teacher, the teachers' mean)."""

import json
from pathlib import Path

import pytest
from sqlmodel import select

from ares_data.errors import ExportError
from ares_data.exporters import export_rl, export_sft
from ares_data.review.labels import flag_question, record_correction, record_score
from ares_data.tables import Sentence

pytestmark = pytest.mark.both_backends
TEXT = "Two is divisible by two. So it is even. The answer is (A)."


def _rows(export):
    from ares_data.exporters import read_shard

    return read_shard(export.path)


def _sentence_ids(store, rationale):
    with store.session() as session:
        return session.exec(select(Sentence.id).where(Sentence.rationale_id == rationale.id)
                            .order_by(Sentence.idx)).all()


def _human(store, rationale, scores: dict[int, float]):
    ids = _sentence_ids(store, rationale)
    with store.session() as session:
        for idx, score in scores.items():
            record_score(session, sentence_id=ids[idx], score=score, reviewer="ann")


@pytest.fixture
def two(feedback):
    """Round 1: a rollout scored by teachers a and b, one only a human scored."""
    q = feedback.question(2)
    both = feedback.rollout(q, TEXT)
    feedback.score(both, [0.9, 0.6, 1.0], model="teacher-a")
    feedback.score(both, [0.5, 0.2, 0.8], model="teacher-b")
    return both, feedback.rollout(q, TEXT, index=1)


def test_human_first_takes_the_human_label_else_the_chosen_teacher(store, two):
    both, human_only = two
    _human(store, both, {1: 0.0})
    _human(store, human_only, {0: 0.1, 1: 0.2, 2: 0.3})
    with pytest.raises(ExportError, match="several teachers.*--teacher MODEL, or --scores mean"):
        export_rl(store, 1)
    export = export_rl(store, 1, teacher="teacher-b")
    rows = {r["rationale_id"]: r for r in _rows(export)}
    assert rows[both.id]["scores"] == [0.5, 0.0, 0.8]
    assert rows[both.id]["score_sources"] == ["teacher-b", "human", "teacher-b"]
    assert rows[human_only.id]["scores"] == [0.1, 0.2, 0.3] and export.skipped == {}
    manifest = json.loads((Path(export.path) / "manifest.json").read_text())
    assert manifest["scores"] == "human-first" and manifest["teacher"] == "teacher-b"


def test_teacher_policy_ignores_humans_and_mean_averages_the_teachers(store, two):
    both, human_only = two
    _human(store, both, {0: 0.0})
    [row] = _rows(export_rl(store, 1, teacher="teacher-a", scores="teacher"))
    assert row["scores"] == [0.9, 0.6, 1.0] and row["teacher_call_id"] is not None
    export = export_rl(store, 1, scores="mean")
    [row] = _rows(export)
    assert row["scores"] == pytest.approx([0.7, 0.4, 0.9]) and row["score_sources"] == ["mean"] * 3
    assert row["teacher_model"] == "teacher-a+teacher-b" and row["teacher_call_id"] is None
    assert export.skipped == {"unscored": 1} and export.manifest["scores"] == "mean"


def test_a_flagged_question_leaves_every_export(store, feedback, two):
    both, _ = two
    feedback.correct(both, "Two is even. The answer is (A).")
    with store.session() as session:
        flag_question(session, question_id=both.question_id, bad=True, reviewer="ann")
    with pytest.raises(ExportError, match="2 flagged_bad"):
        export_rl(store, 1, scores="mean")
    with pytest.raises(ExportError, match="1 flagged_bad"):
        export_sft(store, 1)
    with store.session() as session:
        flag_question(session, question_id=both.question_id, bad=False, reviewer="ann")
    assert export_sft(store, 1).row_count == 1


def test_sft_human_first_replaces_the_teachers_correction(store, feedback, two):
    both, other = two
    feedback.correct(both, "Two is even.", model="teacher-a")
    feedback.correct(other, "Two is even, so yes.", model="teacher-b")
    with store.session() as session:
        record_correction(session, rationale_id=both.id, text="Two is divisible by two, so it is even.",
                          reviewer="ann")
    export = export_sft(store, 1)
    rows = {r["source_rationale_id"]: r for r in _rows(export)}
    assert rows[both.id]["completion"] == "Two is divisible by two, so it is even. The answer is (A)."
    assert rows[both.id]["human_label_id"] is not None and rows[both.id]["correction_id"] is None
    assert rows[other.id]["completion"] == "Two is even, so yes. The answer is (A)."
    assert export.skipped == {"human_correction": 1}
    teacher_only = {r["source_rationale_id"]: r["completion"] for r in _rows(export_sft(store, 1, scores="teacher"))}
    assert teacher_only[both.id] == "Two is even. The answer is (A)."
    only_b = export_sft(store, 1, teacher="teacher-b", scores="teacher")
    assert [r["source_rationale_id"] for r in _rows(only_b)] == [other.id] and only_b.skipped == {"other_teacher": 1}
    with pytest.raises(ExportError, match="mean"):
        export_sft(store, 1, scores="mean")


def test_export_cli_takes_the_policy(cli, two, tmp_path):
    result = cli("export", "rl", "--round", "1", "--scores", "mean", "--out", tmp_path / "rl")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "rl" / "manifest.json").read_text())["scores"] == "mean"
    result = cli("export", "rl", "--round", "1")
    assert result.exit_code == 1 and "--scores mean" in result.stderr
