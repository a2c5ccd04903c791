"""`ares review`: a reviewer drives the Textual app with keys; the store and the next export change."""

import asyncio

from sqlmodel import select
from textual.widgets import DataTable, TextArea

from ares_data.exporters import export_rl, export_sft, read_shard
from ares_data.review.tui import ReviewApp
from ares_data.tables import HumanLabel

TEXT = "Two is divisible by two. So it is even. The answer is (A)."


def _review(store, *keys_and_edits, **options):
    """Run the app headless; a str item is a key, a callable gets the app (to type into the editor)."""
    async def scenario():
        app = ReviewApp(store, reviewer="ann", **options)
        async with app.run_test() as pilot:
            for step in keys_and_edits:
                if callable(step):
                    step(app)
                else:
                    await pilot.press(step)
            await pilot.pause()
            return app

    return asyncio.run(scenario())


def test_three_scores_and_a_correction_reach_the_next_export(store, feedback):
    q = feedback.question(2)
    first, second = feedback.rollout(q, TEXT), feedback.rollout(q, TEXT, index=1)
    for rollout in (first, second):
        feedback.score(rollout, [0.9, 0.6, 1.0])
    feedback.correct(first, "Two is even. The answer is (A).")
    teacher_rows = store.query_readonly("SELECT id, score FROM sentence_score ORDER BY id")[1]

    def type_correction(app):
        assert app.query_one("#editor", TextArea).text == "Two is even. The answer is (A)."
        app.query_one("#editor", TextArea).text = "Two is divisible by two, so it is even."

    def on_second_rationale_last_row(app):
        assert app.position == 1 and app.query_one("#sentences", DataTable).cursor_row == 2
        assert "0.0" in str(app.query_one("#sentences", DataTable).get_row_at(2))

    _review(store, "3", "down", "t", "t", "down", "a", "e", type_correction, "ctrl+s", "n", "down", "down", "0",
            on_second_rationale_last_row, round=1)

    with store.session() as session:
        labels = session.exec(select(HumanLabel).order_by(HumanLabel.id)).all()
    assert [(h.kind, h.old_score, h.new_score) for h in labels if h.kind == "score"] == [
        ("score", 0.9, 0.3), ("score", 0.6, 1.0), ("score", 1.0, 1.0), ("score", 1.0, 0.0)]
    [fix] = [h for h in labels if h.kind == "correction"]
    assert fix.old_text == "Two is even. The answer is (A)." and fix.rationale_id == first.id
    assert {h.reviewer for h in labels} == {"ann"} and {h.origin for h in labels} == {"review"}
    assert store.query_readonly("SELECT id, score FROM sentence_score ORDER BY id")[1] == teacher_rows

    rows = {r["rationale_id"]: r["scores"] for r in read_shard(export_rl(store, 1).path)}
    assert rows == {first.id: [0.3, 1.0, 1.0], second.id: [0.9, 0.6, 0.0]}
    [sft] = read_shard(export_sft(store, 1).path)
    assert sft["completion"] == "Two is divisible by two, so it is even. The answer is (A)."


def test_flag_escape_and_filter(store, feedback):
    one, two = feedback.question(1), feedback.question(2)
    feedback.score(feedback.rollout(one, TEXT), [0.5, 0.5, 0.5])
    feedback.rollout(two, TEXT)
    app = _review(store, "e", "escape", "5", "f", where=f"q.id = {one.id}")
    assert len(app.items) == 1 and app.items[0].flagged
    assert store.query_readonly("SELECT kind, new_text, new_score FROM human_label ORDER BY id")[1] == [
        ("score", None, 0.5), ("flag", "bad", None)]
    app = _review(store, "f", round=1)
    assert [item.flagged for item in app.items] == [False, False]
    assert store.query_readonly("SELECT COUNT(*) FROM human_label WHERE kind = 'flag'")[1] == [(2,)]


def test_the_filter_selects_and_a_bad_one_is_one_line(cli, feedback, tmp_path):
    feedback.rollout(feedback.question(1), TEXT)
    feedback.rollout(feedback.question(2), TEXT)
    result = cli("review", "export", "--out", tmp_path / "t.json", "--filter", "no_such_column = 1")
    assert result.exit_code == 1 and "--filter 'no_such_column = 1'" in result.stderr
    result = cli("review", "export", "--out", tmp_path / "t.json", "--filter", "q.source_id = '2'")
    assert result.exit_code == 0 and "1 tasks" in result.stdout


def test_a_long_sentence_wraps_and_every_score_column_stays_on_a_narrow_screen(store, feedback):
    long = " ".join(["This sentence is much longer than the screen is wide"] * 4) + "."
    rollout = feedback.rollout(feedback.question(1), f"{long} The answer is (A).")
    feedback.score(rollout, [0.3, 0.8], model="teacher-a")
    feedback.score(rollout, [0.4, 0.7], model="teacher-with-a-long-name")

    async def scenario():
        app = ReviewApp(store, reviewer="ann", round=1)
        async with app.run_test(size=(60, 30)) as pilot:
            await pilot.pause()
            table = app.query_one("#sentences", DataTable)
            widths = [column.get_render_width(table) for column in table.ordered_columns]
            labels = [str(column.label) for column in table.ordered_columns]
            return sum(widths), labels, table.ordered_rows[0].height, str(table.get_row_at(0))

    total, labels, first_height, first_row = asyncio.run(scenario())
    assert total <= 60  # every column, the last score column included, is on screen
    assert labels[:2] == ["#", "sentence"] and labels[-1] == "human" and len(labels) == 5
    assert first_height > 1  # the long sentence wraps instead of pushing the scores out
    assert "0.3" in first_row and "0.4" in first_row
