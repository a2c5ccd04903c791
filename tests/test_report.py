"""`ares report` reads the store and writes Markdown + PNG plots with the figures in it."""

import json
import re

import pytest
from sqlmodel import select

from ares_data import tables as m


def _seed(store):
    with store.session() as s:
        q = m.Question(dataset="d", source_id="1", split="test", question="q", choices=["a", "b"], answer_index=0)
        s.add(q)
        base = m.ModelCheckpoint(name="base", path="p", base_model="p", stage="base")
        s.add(base)
        s.flush()
        rl = m.ModelCheckpoint(name="round-1-rl", path="p", base_model="p", stage="rl", round=1, parent_id=base.id)
        s.add(rl)
        s.flush()
        r, _ = store.add_rationale(s, question_id=q.id, source="student", text="One. Two.", dedup_key="k",
                                   round=1, model_checkpoint_id=base.id)
        call = m.TeacherCall(kind="score", provider="openai", model="t", prompt_name="score", prompt_version="v",
                             request_hash="h", request={}, status="ok", cost_usd=0.25, rationale_id=r.id)
        s.add(call)
        s.flush()
        for sent, score in zip(s.exec(select(m.Sentence).order_by(m.Sentence.idx)), (0.2, 0.8)):
            s.add(m.SentenceScore(sentence_id=sent.id, teacher_call_id=call.id, score=score))
        s.add(m.TrainingRun(kind="rl", round=1, status="done",
                            metrics={"steps": [{"mean_reward": 0.1, "kl": 0.0}, {"mean_reward": 0.3, "kl": 0.02}]}))
        s.add(m.EvalResult(kind="accuracy", model_checkpoint_id=rl.id, question_id=q.id, split="test",
                           predicted_answer=0, correct=True))
        for outcome in ("win", "win", "loss"):
            s.add(m.EvalResult(kind="winrate", model_checkpoint_id=rl.id, opponent_checkpoint_id=base.id,
                               question_id=q.id, split="test", outcome=outcome, a_position="A"))


@pytest.mark.both_backends
def test_report_writes_plots_and_exact_tables(cli, store, tmp_path):
    _seed(store)
    out = tmp_path / "report"
    result = cli("report", "--out", out)
    assert result.exit_code == 0, result.output
    text = (out / "report.md").read_text()
    for png in ("mean_sentence_score.png", "rl_reward__mean_per_step.png", "accuracy.png", "win_rate.png",
                "teacher_cost.png"):
        assert (out / png).stat().st_size > 1000, png
        assert f"]({png})" in text
    assert "| 1 | 1 | 2 | 2 | 0.5 | 0 | 0 | 0.25 |" in text  # v_round_summary row
    assert "| round-1-rl | 1 | base | 2 | 0 | 1 | 0.6667 |" in text  # 2 wins, 1 loss
    assert "| round-1-rl | 1 | rl | test | 1 | 1 |" in text


def test_report_on_an_empty_store_says_no_data(cli, store, tmp_path):
    result = cli("report", "--out", tmp_path / "r")
    assert result.exit_code == 0
    assert "_No data yet._" in (tmp_path / "r" / "report.md").read_text()


def _gold_scored(store, cost: float = 0.125) -> None:
    """A gold rationale (no round) scored by the teacher, and a judging call tied to no rationale."""
    with store.session() as s:
        q = m.Question(dataset="d", source_id="gold-q", split="train", question="q", choices=["a", "b"],
                       answer_index=0)
        s.add(q)
        s.flush()
        r, _ = store.add_rationale(s, question_id=q.id, source="gold", text="Gold one. Gold two.", dedup_key="g")
        call = m.TeacherCall(kind="score", provider="openai", model="t", prompt_name="score", prompt_version="v",
                             request_hash="hg", request={}, status="ok", cost_usd=cost, rationale_id=r.id)
        s.add(call)
        s.add(m.TeacherCall(kind="judge", provider="openai", model="t", prompt_name="judge", prompt_version="v",
                            request_hash="hj", request={}, status="ok", cost_usd=0.5))
        s.flush()
        for sent in s.exec(select(m.Sentence).where(m.Sentence.rationale_id == r.id)):
            s.add(m.SentenceScore(sentence_id=sent.id, teacher_call_id=call.id, score=1.0))


def test_gold_spend_is_round_zero_in_the_view_status_and_report_with_a_total(cli, store, tmp_path):
    _seed(store)
    _gold_scored(store)
    assert store.query_readonly("SELECT round, rationales, scored_sentences, cost_usd FROM v_round_summary "
                                "ORDER BY round")[1] == [(0, 1, 2, 0.125), (1, 1, 2, 0.25)]
    status = json.loads(cli("status", "--json").stdout)
    rounds = {row["round"]: row["cost_usd"] for row in status["Rounds (v_round_summary; round 0: gold rationales)"]}
    assert rounds == {0: 0.125, 1: 0.25, "other calls": 0.5, "total": 0.875}
    assert cli("report", "--out", tmp_path / "r").exit_code == 0
    text = (tmp_path / "r" / "report.md").read_text()
    assert "| 0 | 1 | 2 | 2 | 1 | 0 | 0 | 0.125 |" in text and "| total | 2 | 4 | 4 |  | 0 | 0 | 0.875 |" in text
    assert "Total over every teacher call: $0.8750" in text
    assert sorted(series_points(store, "Teacher cost")) == [(0, 0.125), (1, 0.25)]


def series_points(store, title):
    from ares_data.report import collect_series

    return next(s.points for s in collect_series(store)[0] if s.title == title)


def test_report_headings_are_unique_and_it_says_which_store_when_and_which_models(cli, store, tmp_path):
    _seed(store)
    assert cli("report", "--out", tmp_path / "r").exit_code == 0
    text = (tmp_path / "r" / "report.md").read_text()
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert len(headings) == len(set(headings)), headings
    assert f"- Store: `sqlite:///{tmp_path / 'ares.db'}`" in text
    assert re.search(r"^- Written: \d{4}-\d\d-\d\d \d\d:\d\d UTC$", text, re.MULTILINE)
    assert "- Student: base (p)" in text and "- Teacher: t (1 calls)" in text


def test_a_one_point_score_plot_keeps_the_whole_zero_to_one_axis(store):
    import matplotlib

    matplotlib.use("Agg")
    from ares_data.report import collect_series, plot

    _seed(store)
    by_title = {s.title: s for s in collect_series(store)[0]}
    for title in ("Mean sentence score", "Accuracy", "Win rate"):
        assert len(by_title[title].points) == 1
        assert plot(by_title[title]).axes[0].get_ylim() == (0.0, 1.0), title
