"""`ares train prm` on a tiny model: a synthetic set where the right score is learnable (a sentence's
score follows from its words), split by question; validation error falls with training."""

from __future__ import annotations

import random

import pytest
from sqlmodel import select

from ares_data.tables import ModelCheckpoint, TrainingRun

GOOD = ["Two is even.", "Four is even.", "Six is even.", "Eight is even."]
BAD = ["Nine is purple.", "Seven is purple.", "Five is purple.", "Three is purple."]


def learnable_store(feedback, questions: int = 16) -> None:
    """Each rationale mixes sentences that the teacher scored 0.9 (GOOD) and 0.1 (BAD)."""
    rng = random.Random(0)
    for n in range(questions):
        q = feedback.question(n)
        for k in range(2):
            picks = [(rng.choice(GOOD), 0.9) if rng.random() < 0.5 else (rng.choice(BAD), 0.1) for _ in range(3)]
            r = feedback.rollout(q, " ".join(text for text, _ in picks), index=k)
            feedback.score(r, [score for _, score in picks])


def test_split_by_question_keeps_a_question_on_one_side():
    from ares_data.prm_data import LabelledRationale
    from ares_train.prm_trainer import split_by_question

    items = [LabelledRationale(q, q * 10 + k, "student", 1, "p", "t.", ["t."], [2], [0.5])
             for q in range(10) for k in range(3)]
    train, validation = split_by_question(items, 0.2, seed=1)
    assert len({i.question_id for i in validation}) == 2 and len(validation) == 6
    assert not {i.question_id for i in train} & {i.question_id for i in validation}
    assert split_by_question(items, 0.2, seed=1) == (train, validation)  # the seed fixes the split


def test_spearman_matches_ranks_with_ties():
    from ares_data.evaluation import spearman

    assert spearman([0.1, 0.2, 0.3], [1, 2, 3]) == pytest.approx(1.0)
    assert spearman([0.1, 0.2, 0.3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([0.5, 0.5], [0.1, 0.9]) is None
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)


@pytest.mark.slow  # 212 s: among the longest of `make test` (pytest --durations, loaded 2-core machine)
def test_train_prm_lowers_validation_error_and_registers_a_prm_checkpoint(cli, store, feedback, tiny_model_dir):
    learnable_store(feedback)
    result = cli("train", "prm", "--model", tiny_model_dir, "--epochs", "6", "--lr", "3e-3", "--batch-size", "4",
                 "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "registered prm-1" in result.stdout
    with store.session() as session:
        prm = session.exec(select(ModelCheckpoint).where(ModelCheckpoint.name == "prm-1")).one()
        run = session.exec(select(TrainingRun).where(TrainingRun.output_checkpoint_id == prm.id)).one()
    assert prm.stage == "prm" and run.kind == "prm" and run.status == "done" and prm.parent_id is not None
    summary, data = run.metrics["summary"], run.metrics["data"]
    assert data["teacher"] == "teacher-a" and run.config["teacher"] == "teacher-a"
    assert data["validation_rationales"] > 0 and data["train_rationales"] + data["validation_rationales"] == 32
    assert summary["val_mae"] < 0.75 * summary["val_mae_before"]  # before: the mean training score everywhere
    assert summary["val_spearman"] > 0.5
    assert summary["device"] == "cpu" and summary["dtype"] == "float32"


def test_train_prm_without_teacher_scores_says_so_in_one_line(cli, store, feedback, tiny_model_dir):
    feedback.rollout(feedback.question(1), "Unscored. Still unscored.")
    result = cli("train", "prm", "--model", tiny_model_dir)
    assert result.exit_code == 1
    assert "no teacher scores in the store" in result.output
    with store.session() as session:
        assert session.exec(select(TrainingRun)).all() == []  # nothing half-written


def test_prm_as_teacher_writes_rows_that_pass_a_teachers_checks(cli, store, feedback, tiny_model_dir, tmp_path):
    """`collect-scores --provider prm`: the teacher path's own validation and rows, cost 0, resumable;
    exports and `ares agreement` read them like any teacher's."""
    from ares_data.tables import Rationale, Sentence, SentenceScore, TeacherCall

    learnable_store(feedback, questions=6)
    assert cli("train", "prm", "--model", tiny_model_dir, "--epochs", "1", "--device", "cpu").exit_code == 0
    result = cli("collect-scores", "--provider", "prm", "--model", "prm-1", "--round", "1", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "scored 12 of 12 rationales; failed: none" in result.stdout and "cost $0.0000" in result.stdout
    with store.session() as session:
        calls = session.exec(select(TeacherCall).where(TeacherCall.provider == "prm")).all()
        scores = session.exec(select(SentenceScore, Sentence).join(Sentence, Sentence.id == SentenceScore.sentence_id)
                              .join(TeacherCall, TeacherCall.id == SentenceScore.teacher_call_id)
                              .where(TeacherCall.provider == "prm")).all()
        sentences = session.exec(select(Sentence).join(Rationale, Rationale.id == Sentence.rationale_id)).all()
    assert len(calls) == 12 and {c.status for c in calls} == {"ok"} and {c.model for c in calls} == {"prm-1"}
    assert all(c.cost_usd == 0 and c.latency_ms > 0 and c.tokens_in > 0 and c.attempts == 1 for c in calls)
    assert all(c.kind == "score" and c.rationale_id and c.request["metadata"]["rationale_id"] == str(c.rationale_id)
               for c in calls)
    assert all(c.model_snapshot.startswith("prm-1 (model_checkpoint ") for c in calls)  # the checkpoint
    _, spend = store.query_readonly("SELECT calls, attempts, retried_attempts, answered_usd FROM v_teacher_spend"
                                    " WHERE provider = 'prm'")
    assert spend == [(12, 12, 0, 0.0)]  # one attempt per call, as the teacher path records it; free
    assert len(scores) == len(sentences)  # one score per sentence, each on the 0.1 grid of [0, 1]
    assert all(0 <= s.score <= 1 and round(s.score * 10) == s.score * 10 for s, _ in scores)
    with store.session() as session:
        directory = session.exec(select(ModelCheckpoint.path).where(ModelCheckpoint.name == "prm-1")).one()
    again = cli("collect-scores", "--provider", "prm", "--model", directory, "--round", "1", "--device", "cpu")
    assert "scored 0 of 0" in again.stdout  # by its directory too, it is prm-1: nothing is asked twice

    exported = cli("export", "rl", "--round", "1", "--teacher", "prm-1", "--scores", "teacher",
                   "--out", tmp_path / "rl")
    assert exported.exit_code == 0 and "12 rl rows" in exported.stdout, exported.output
    shown = cli("agreement")
    assert shown.exit_code == 0 and "each PRM against the teacher it learned from" in shown.stdout
    _, rows = store.query_readonly("SELECT shared_sentences FROM v_agreement WHERE round IS NULL"
                                   " AND labeller_a = 'prm-1' AND labeller_b = 'teacher-a'")
    assert rows == [(len(sentences),)]


def test_prm_provider_refuses_corrections_and_unknown_checkpoints(cli, store, feedback):
    learnable_store(feedback, questions=1)
    wrong = cli("collect-corrections", "--provider", "prm", "--model", "prm-1", "--round", "1")
    assert wrong.exit_code == 1 and "writes no corrections" in wrong.output
    missing = cli("collect-scores", "--provider", "prm", "--model", "prm-9", "--round", "1")
    assert missing.exit_code == 1 and "no PRM 'prm-9' in the store" in missing.output
    bare = cli("collect-scores", "--provider", "prm", "--round", "1")
    assert bare.exit_code == 1 and "--provider prm needs --model" in bare.output


@pytest.mark.slow
def test_loop_scores_rollouts_with_the_prm_and_corrects_with_the_teacher(cli, store, tiny_model_dir, tmp_path):
    from ares_data.fake_teacher import serve_in_thread

    lines = ['{"id": "%d", "question": "Which is bigger, %d or %d?", "choices": ["%d", "%d"], "answer": 1, '
             '"rationale": "Compare the numbers. %d is more than %d. The answer is (B)."}'
             % (i, i, i + 1, i, i + 1, i + 1, i) for i in range(3)]
    (tmp_path / "toy.jsonl").write_text("\n".join(lines) + "\n")
    assert cli("import", "jsonl", tmp_path / "toy.jsonl").exit_code == 0
    with serve_in_thread(seed=1) as url:
        teacher = ("--base-url", url, "--concurrency", "1")
        assert cli("collect-scores", "--rationales", "gold", "--model", "fake-teacher", *teacher).exit_code == 0
        assert cli("train", "prm", "--model", tiny_model_dir, "--epochs", "1", "--sources", "gold").exit_code == 0
        result = cli("train", "--model", tiny_model_dir, "--prm", "prm-1", "--k", "2", "--limit", "3",
                     "--max-new-tokens", "24", "--teacher-model", "fake-teacher", *teacher)
        assert result.exit_code == 0, result.output
    _, rows = store.query_readonly(
        "SELECT c.kind, c.provider, c.model, COUNT(*) FROM teacher_call c JOIN rationale r ON r.id = c.rationale_id"
        " WHERE r.round = 1 AND c.status = 'ok' GROUP BY c.kind, c.provider, c.model ORDER BY c.kind")
    assert rows == [("correct", "openai", "fake-teacher", 6), ("score", "prm", "prm-1", 6)]
    _, stages = store.query_readonly("SELECT stage, status FROM pipeline_stage WHERE stage IN ('score', 'train_rl')")
    assert sorted(stages) == [("score", "done"), ("train_rl", "done")]
