"""Label Studio round trip: export tasks, annotate as Label Studio would, import human labels."""

import copy
import json

import pytest

from ares_data.errors import ReviewError
from ares_data.exporters import export_rl, read_shard
from ares_data.review.label_studio import import_annotations

pytestmark = pytest.mark.both_backends
TEXT = "Two is divisible by two. So it is even. The answer is (A)."


@pytest.fixture
def tasks_file(cli, feedback, tmp_path):
    q = feedback.question(2)
    for index in range(2):
        rollout = feedback.rollout(q, TEXT, index=index)
        feedback.score(rollout, [0.9, 0.6, 1.0])
    feedback.correct(rollout, "Two is even. The answer is (A).")
    out = tmp_path / "tasks.json"
    result = cli("review", "export", "--format", "label-studio", "--out", out)
    assert result.exit_code == 0, result.output
    assert "2 tasks" in result.stdout and "<Repeater" in out.with_suffix(".xml").read_text()
    return out


def _annotate(tasks, edits: dict[int, dict[str, object]]):
    """What Label Studio exports: each task with an annotation that starts from the prediction."""
    done = []
    for n, task in enumerate(tasks):
        result = copy.deepcopy(task["predictions"][0]["result"])
        for item in result:
            if item["from_name"] in edits.get(n, {}):
                item["value"]["number"] = edits[n][item["from_name"]]
        if "correction" in edits.get(n, {}):
            result.append({"from_name": "correction", "to_name": "rationale", "type": "textarea",
                           "value": {"text": [edits[n]["correction"]]}})
        done.append({**task, "id": 100 + n, "annotations": [{"id": n, "completed_by": {"email": "ann@x"},
                                                              "result": result, "was_cancelled": False}]})
    return done


def test_round_trip_changes_exactly_the_edited_sentences(store, tasks_file, tmp_path):
    tasks = json.loads(tasks_file.read_text())
    assert tasks[0]["predictions"][0]["model_version"] == "teacher-a"
    assert tasks[1]["data"]["correction"] == "Two is even. The answer is (A)."
    edited = tmp_path / "annotated.json"
    edits = {0: {"score_1": 0.2}, 1: {"score_0": 0.4, "correction": "Two is even."}}
    edited.write_text(json.dumps(_annotate(tasks, edits)))
    before = {r["rationale_id"]: r["scores"] for r in read_shard(export_rl(store, 1).path)}
    assert import_annotations(store, edited) == {"score": 2, "correction": 1, "flag": 0}
    after = {r["rationale_id"]: r["scores"] for r in read_shard(export_rl(store, 1).path)}
    first, second = sorted(after)
    assert after[first] == [0.9, 0.2, 1.0] and after[second] == [0.4, 0.6, 1.0]
    assert before[first] == before[second] == [0.9, 0.6, 1.0]
    assert import_annotations(store, edited) == {"score": 0, "correction": 0, "flag": 0}  # idempotent
    columns, rows = store.query_readonly("SELECT reviewer, origin, old_score, new_score FROM human_label "
                                         "WHERE kind = 'score' ORDER BY id")
    assert rows == [("label-studio:ann@x", "label-studio", 0.6, 0.2), ("label-studio:ann@x", "label-studio", 0.9, 0.4)]


@pytest.mark.parametrize("breakage, message", [
    (lambda t: t[1]["data"].update(ares_rationale_id=999), "task 101: rationale 999 is not"),
    (lambda t: t[0]["annotations"][0]["result"][0]["value"].update(number=1.5), "task 100: score_0: score 1.5"),
    (lambda t: t[1]["annotations"][0]["result"].append({"from_name": "stars"}),
     "task 101: unknown or malformed result 'stars'"),
    (lambda t: t[0].pop("data"), "task 100: no data.ares_rationale_id"),
])
def test_a_bad_task_is_named_and_nothing_is_written(cli, store, tasks_file, tmp_path, breakage, message):
    tasks = _annotate(json.loads(tasks_file.read_text()), {0: {"score_2": 0.1}})
    breakage(tasks)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(tasks))
    with pytest.raises(ReviewError, match=message):
        import_annotations(store, bad)
    assert store.query_readonly("SELECT COUNT(*) FROM human_label")[1] == [(0,)]
    result = cli("review", "import", bad)
    assert result.exit_code == 1 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
