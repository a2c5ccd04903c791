"""Process supervision from the store: migration 0016 (stage/kind `prm`), the labelled steps, and
`ares export prm` in TRL's stepwise and Math-Shepherd layouts (read back with `datasets`)."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from ares_data.errors import ExportError
from ares_data.migrate import load_migrations, migrate
from ares_data.store import resolve_url


@pytest.mark.both_backends
def test_0016_rebuild_keeps_rows_and_references_and_allows_prm(db_url):
    engine = create_engine(resolve_url(db_url))
    before = [m for m in load_migrations() if m.name < "0016"]
    migrate(engine, before)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO model_checkpoint (id, name, path, base_model, stage, metadata, created_at)"
                          " VALUES (1, 'base', 'p', 'p', 'base', '{\"a\": 1}', '2026-01-01')"))
        conn.execute(text("INSERT INTO model_checkpoint (id, name, path, base_model, parent_id, round, stage,"
                          " created_at) VALUES (2, 'round-1-rl', 'q', 'p', 1, 1, 'rl', '2026-01-02')"))
        conn.execute(text("INSERT INTO question (id, dataset, source_id, split, question, choices, created_at)"
                          " VALUES (1, 'toy', '1', 'train', 'q?', '[\"a\"]', '2026-01-01')"))
        conn.execute(text("INSERT INTO rationale (question_id, source, model_checkpoint_id, text, dedup_key,"
                          " created_at) VALUES (1, 'student', 2, 'x.', 'k', '2026-01-01')"))
        conn.execute(text("INSERT INTO training_run (id, kind, round, status, metrics, input_checkpoint_id,"
                          " output_checkpoint_id, started_at) VALUES (1, 'rl', 1, 'done', '{\"m\": 2}', 1, 2,"
                          " '2026-01-01')"))
    assert "0016_prm_stage" in migrate(engine)
    with engine.begin() as conn:
        rows = conn.execute(text("SELECT id, name, parent_id, round, stage FROM model_checkpoint ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [(1, "base", None, None, "base"), (2, "round-1-rl", 1, 1, "rl")]
        run = conn.execute(text("SELECT kind, input_checkpoint_id, output_checkpoint_id FROM training_run")).one()
        assert tuple(run) == ("rl", 1, 2)
        conn.execute(text("INSERT INTO model_checkpoint (id, name, path, base_model, parent_id, stage, created_at)"
                          " VALUES (3, 'prm-1', 'r', 'p', 2, 'prm', '2026-01-03')"))
        conn.execute(text("INSERT INTO training_run (id, kind, status, started_at)"
                          " VALUES (2, 'prm', 'done', '2026-01-03')"))
    for bad in ("INSERT INTO model_checkpoint (name, path, base_model, stage, created_at)"
                " VALUES ('x', 'p', 'b', 'final', '2026-01-01')",
                "INSERT INTO training_run (kind, status, started_at) VALUES ('dpo', 'done', '2026-01-01')",
                "INSERT INTO rationale (question_id, source, model_checkpoint_id, text, dedup_key, created_at)"
                " VALUES (1, 'student', 99, 'y.', 'k2', '2026-01-01')"):  # the references still hold
        with pytest.raises(IntegrityError), engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA foreign_keys = ON")
            conn.execute(text(bad))
    engine.dispose()


def _scored(feedback, n_questions: int = 3):
    """Questions with a gold-like student rationale each, scored by teacher-a."""
    out = []
    for n in range(n_questions):
        q = feedback.question(n)
        r = feedback.rollout(q, f"{n} ends in a digit. Even numbers end in 0, 2, 4, 6 or 8. The answer is (A).")
        feedback.score(r, [0.9, 0.3, 1.0])
        out.append(r)
    return out


def test_export_prm_stepwise_and_math_shepherd_load_with_datasets(store, feedback, tmp_path):
    from datasets import load_dataset

    from ares_data.exporters import export_prm

    _scored(feedback)
    stepwise = export_prm(store, "stepwise", threshold=0.5, out_dir=tmp_path / "sw")
    rows = load_dataset("parquet", data_files=str(tmp_path / "sw" / "data.parquet"), split="train")
    assert rows.column_names == ["prompt", "completions", "labels"] and stepwise.row_count == 3
    assert rows[0]["completions"] == ["0 ends in a digit.", "Even numbers end in 0, 2, 4, 6 or 8.",
                                      "The answer is (A)."]
    assert rows[0]["labels"] == [True, False, True] and rows[0]["prompt"].startswith("Question: Is 0 even?")
    strict = export_prm(store, "stepwise", threshold=0.95, out_dir=tmp_path / "strict")
    assert strict.manifest["threshold"] == 0.95
    assert load_dataset("parquet", data_files=str(tmp_path / "strict" / "data.parquet"),
                        split="train")[0]["labels"] == [False, False, True]

    export_prm(store, "math-shepherd", out_dir=tmp_path / "ms")
    shepherd = load_dataset("parquet", data_files=str(tmp_path / "ms" / "data.parquet"), split="train")
    assert shepherd.column_names == ["input", "label", "task"]
    assert shepherd[0]["input"].endswith("Step 1: 0 ends in a digit. ки\n"
                                         "Step 2: Even numbers end in 0, 2, 4, 6 or 8. ки\n"
                                         "Step 3: The answer is (A). ки")
    assert shepherd[0]["label"].endswith("Step 1: 0 ends in a digit. +\n"
                                         "Step 2: Even numbers end in 0, 2, 4, 6 or 8. -\n"
                                         "Step 3: The answer is (A). +")
    assert shepherd[0]["input"].count("ки") == 3


def test_labelled_steps_leave_out_partly_scored_and_need_one_teacher(store, feedback):
    from ares_data.prm_data import labelled_rationales

    first, second, _ = _scored(feedback)
    partial = feedback.rollout(feedback.question(9), "One. Two.")
    feedback.score(partial, [0.5])  # one of two sentences
    items, skipped, teacher = labelled_rationales(store)
    assert [i.rationale_id for i in items] == [first.id, second.id, _.id] and teacher == "teacher-a"
    assert skipped == {"partly_scored": 1}
    assert items[0].scores == [0.9, 0.3, 1.0] and items[0].ends[-1] == len(items[0].text)
    feedback.score(first, [0.1, 0.1, 0.1], model="teacher-b")
    with pytest.raises(ExportError, match="several teachers .*teacher-a, teacher-b"):
        labelled_rationales(store)
    assert len(labelled_rationales(store, teacher="teacher-b")[0]) == 1
    assert labelled_rationales(store, sources=("gold",), teacher="teacher-a")[0] == []


def test_export_prm_cli_rejects_a_bad_threshold_in_one_line(cli, store, feedback):
    _scored(feedback)
    result = cli("export", "prm", "--format", "stepwise", "--threshold", "1.5")
    assert result.exit_code != 0 and "threshold" in result.output
    ok = cli("export", "prm", "--format", "math-shepherd")
    assert ok.exit_code == 0, ok.output
    assert "3 prm-math-shepherd rows" in ok.stdout


def test_prm_provider_without_the_training_extra_names_it_in_one_line(cli, store, feedback, monkeypatch):
    import ares_data.extras as extras

    _scored(feedback)
    real = extras.find_spec
    monkeypatch.setattr(extras, "find_spec", lambda name: None if name == "torch" else real(name))
    result = cli("collect-scores", "--provider", "prm", "--model", "prm-1", "--round", "1")
    assert result.exit_code == 1
    assert "'train' extra (torch is not installed): pip install 'ares-toolkit[train]'" in result.output
    assert len(result.output.strip().splitlines()) == 1
    _, calls = store.query_readonly("SELECT COUNT(*) FROM teacher_call WHERE provider = 'prm'")
    assert calls == [(0,)]
