"""Importers on ScienceQA / A-OKVQA-shaped files (written by tests/sample_data.py, and the real
samples when ../shared/data has them): exact counts and fields, idempotence, all-or-nothing errors.
Expectations are read from the input files themselves, so one test body checks both."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from ares_data.errors import ImportDataError
from ares_data.importers import import_aokvqa, import_example, import_jsonl, import_scienceqa

pytestmark = pytest.mark.both_backends  # every importer / exporter also runs on PostgreSQL
SPLITS = ("train", "val", "test")
# The gold rationale of problem 1, sentence by sentence: (how many, the last ones), per source.
GOLD_1 = {
    "problems.json": (6, ["A force is a push or a pull.", "Forces are measured in newtons (N).",
                          "A larger force changes the motion of cart 1 more.", "Look at each force.",
                          "The strongest is 2 newtons.", "So the answer is 2 newtons."]),
    "problems.sample150.json": (9, ["On most maps, north is at the top of the map.",
                                    "To find the answer, look at the compass rose.",
                                    "Look at which way the north arrow is pointing.",
                                    "West Virginia is farthest north."]),
}


def load(path: Path):
    return json.loads(path.read_text())


def summary(questions: int, gold: int, present: int = 0) -> str:
    return f"{questions} new questions, {gold} new gold rationales ({present} already present)"


def scienceqa_summary(problems: dict) -> str:
    return summary(len(problems), sum(1 for p in problems.values() if p["lecture"].strip() or p["solution"].strip()))


def split_of(problems: dict, splits: dict) -> dict[str, str]:
    """pid -> split as the official split file assigns it (train, val, test; else the problem's own)."""
    found = {pid: split for split in reversed(SPLITS) for pid in splits.get(split, [])}
    return {pid: found.get(pid, p["split"]) for pid, p in problems.items()}


def rows(store, sql: str, **params) -> list[tuple]:
    return store.query_readonly(sql, params)[1]


def per_split(store, dataset: str) -> dict[str, int]:
    return dict(rows(store, "SELECT split, COUNT(*) FROM question WHERE dataset = :d GROUP BY split", d=dataset))


def assert_spans_exact(store) -> None:
    bad = rows(store, "SELECT s.id FROM sentence s JOIN rationale r ON r.id = s.rationale_id "
                      "WHERE substr(r.text, s.start_char + 1, s.end_char - s.start_char) != s.text")
    assert bad == []


# -- ScienceQA ------------------------------------------------------------------------------------

def test_scienceqa_sample_with_captions(cli, store, sqa):
    problems, splits, captions = load(sqa["problems"]), load(sqa["splits"]), load(sqa["captions"])["captions"]
    out = cli("import", "scienceqa", sqa["problems"], "--splits", sqa["splits"], "--captions", sqa["captions"])
    assert out.exit_code == 0, out.output
    assert out.stdout.strip() == scienceqa_summary(problems)
    assert per_split(store, "scienceqa") == {split: len(splits[split]) for split in SPLITS}
    one, split = problems["1"], split_of(problems, splits)["1"]
    (q,) = rows(store, "SELECT question, choices, answer_index, hint, caption, image_path, image_sha256, subject, "
                       "grade, metadata, split FROM question WHERE source_id = '1'")
    assert q[0] == one["question"] and json.loads(q[1]) == one["choices"]
    assert q[2:9] == (one["answer"], one["hint"], captions["1"], f"{split}/1/image.png", None, one["subject"],
                      one["grade"])
    assert json.loads(q[9]) == {key: one[key] for key in ("topic", "category", "skill", "task")}
    assert q[10] == split
    with_caption = sum(1 for pid in problems if captions.get(pid))
    assert rows(store, "SELECT COUNT(*) FROM question WHERE caption != ''") == [(with_caption,)]
    assert rows(store, "SELECT COUNT(*) FROM question WHERE image_path IS NOT NULL") == [
        (sum(1 for p in problems.values() if p["image"]),)]

    (gold,) = rows(store, "SELECT r.text, r.source, r.sample_index, r.dedup_key FROM rationale r "
                          "JOIN question q ON q.id = r.question_id WHERE q.source_id = '1'")
    assert gold[0] == one["lecture"].strip() + "\n\n" + one["solution"].strip()
    assert gold[1:] == ("gold", 0, "gold:scienceqa:1:0")
    sentences = [r[0] for r in rows(store, "SELECT s.text FROM sentence s JOIN rationale r ON r.id = s.rationale_id "
                                           "WHERE r.dedup_key = 'gold:scienceqa:1:0' ORDER BY s.idx")]
    count, last = GOLD_1[sqa["problems"].name]
    assert len(sentences) == count and sentences[-len(last):] == last
    assert_spans_exact(store)

    again = cli("import", "scienceqa", sqa["problems"], "--splits", sqa["splits"])
    assert again.stdout.strip() == summary(0, 0, len(problems))
    assert store.table_counts()["sentence"] == rows(store, "SELECT COUNT(*) FROM sentence")[0][0]


def test_scienceqa_with_the_full_official_split_file(store, sqa):
    problems = load(sqa["problems"])
    result = import_scienceqa(store, sqa["problems"], sqa["full_splits"])
    assert str(result) == scienceqa_summary(problems)
    expected = Counter(split_of(problems, load(sqa["full_splits"])).values())
    assert per_split(store, "scienceqa") == dict(expected)  # trainval/mini* ignored
    assert rows(store, "SELECT caption FROM question WHERE source_id = '1'") == [("",)]  # no captions file


def test_problems_missing_from_the_split_file_keep_their_own_split(store, sqa, tmp_path):
    problems = load(sqa["problems"])
    assert problems["1"]["split"] == problems["2"]["split"] == "train"
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"test": ["1", "2"]}))
    import_scienceqa(store, sqa["problems"], splits)
    expected = Counter(p["split"] for p in problems.values()) + Counter(test=2) - Counter(train=2)
    assert per_split(store, "scienceqa") == dict(expected)
    assert rows(store, "SELECT split, image_path FROM question WHERE source_id = '1'") == [("test", "test/1/image.png")]


def test_scienceqa_images_are_found_and_hashed(store, sqa, tmp_path):
    image = tmp_path / "images" / "train" / "1" / "image.png"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"\x89PNG fake image")
    import_scienceqa(store, sqa["problems"], sqa["splits"], images_dir=tmp_path / "images")
    assert rows(store, "SELECT image_path, image_sha256 FROM question WHERE source_id IN ('1', '2') "
                       "ORDER BY source_id") == [
        (str(image.resolve()), hashlib.sha256(b"\x89PNG fake image").hexdigest()),
        ("train/2/image.png", None),  # not on disk: relative path, no hash
    ]


# -- A-OKVQA ----------------------------------------------------------------------------------------

def test_aokvqa_val(cli, store, aokvqa_val):
    data = load(aokvqa_val)
    first = data[0]
    expected = summary(len(data), sum(len(q["rationales"]) for q in data))
    out = cli("import", "aokvqa", aokvqa_val)
    assert out.exit_code == 0, out.output
    assert out.stdout.strip() == expected
    (q,) = rows(store, "SELECT id, question, answer_index, split, image_path, metadata FROM question "
                       "WHERE dataset = 'aokvqa' AND source_id = :s", s=first["question_id"])
    assert q[1:5] == (first["question"], first["correct_choice_idx"], "val", f"val2017/{first['image_id']:012d}.jpg")
    meta = json.loads(q[5])
    assert meta["image_id"] == first["image_id"] and meta["difficult_direct_answer"] is first["difficult_direct_answer"]
    gold = rows(store, "SELECT sample_index, text, dedup_key FROM rationale WHERE question_id = :q "
                       "ORDER BY sample_index", q=q[0])
    assert [g[0] for g in gold] == list(range(len(first["rationales"])))
    assert gold[0][1:] == (first["rationales"][0], f"gold:aokvqa:{first['question_id']}:0")
    assert_spans_exact(store)

    before = store.table_counts()
    again = cli("import", "aokvqa", aokvqa_val)
    assert again.stdout.strip() == summary(0, 0, len(data))
    assert store.table_counts() == before


def test_aokvqa_test_file_without_answers(store, aokvqa_val, tmp_path):
    keep = ("split", "image_id", "question_id", "question", "choices")
    questions = [{k: q[k] for k in keep} | {"split": "test"} for q in load(aokvqa_val)[:20]]
    test_file = tmp_path / "aokvqa_v1p0_test.json"
    test_file.write_text(json.dumps(questions))
    assert str(import_aokvqa(store, test_file)) == summary(len(questions), 0)
    assert rows(store, "SELECT COUNT(*), COUNT(answer_index) FROM question") == [(len(questions), 0)]
    assert rows(store, "SELECT image_path FROM question WHERE source_id = :s", s=questions[0]["question_id"]) == [
        (f"test2017/{questions[0]['image_id']:012d}.jpg",)
    ]
    assert store.table_counts()["rationale"] == 0


# -- corrupted files: one line naming file, record and field; nothing written ----------------------

def _corrupt_scienceqa(problems: Path, how: str) -> tuple[str, str]:
    """The corrupted text and the pid it names (the last problem)."""
    text = problems.read_text()
    data = json.loads(text)
    pid = list(data)[-1]
    if how == "truncated":
        return text[: len(text) // 2], pid
    if how == "missing choices":
        del data[pid]["choices"]
    if how == "answer as string":
        data[pid]["answer"] = "0"
    return json.dumps(data), pid


@pytest.mark.parametrize(("how", "expected"), [
    ("truncated", "record at line "),
    ("missing choices", "record {pid}, field 'choices': missing"),
    ("answer as string", "record {pid}, field 'answer': expected an integer, got str"),
])
def test_corrupted_scienceqa_imports_nothing(cli, store, sqa, tmp_path, how, expected):
    import_example(store)
    before = store.table_counts()
    bad = tmp_path / "problems.json"
    text, pid = _corrupt_scienceqa(sqa["problems"], how)
    bad.write_text(text)
    out = cli("import", "scienceqa", bad, "--splits", sqa["splits"])
    assert out.exit_code == 1
    (line,) = out.stderr.strip().splitlines()
    assert str(bad) in line and expected.format(pid=pid) in line
    assert store.table_counts() == before


def test_corrupted_aokvqa_names_the_question(store, aokvqa_val, tmp_path):
    data = load(aokvqa_val)
    broken = data[len(data) // 2]
    broken["rationales"] = "not a list"
    bad = tmp_path / "val.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ImportDataError) as error:
        import_aokvqa(store, bad)
    assert str(error.value) == (f"{bad}: record {broken['question_id']}, field 'rationales': "
                                "expected a list of strings, got str")
    assert store.table_counts()["question"] == 0


# -- generic JSONL and the example set --------------------------------------------------------------

def _write_jsonl(path: Path, records: list) -> Path:
    path.write_text("\n".join(json.dumps(r) if not isinstance(r, str) else r for r in records) + "\n")
    return path


def test_jsonl_fields(store, tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(b"png")
    path = _write_jsonl(tmp_path / "my_quiz.jsonl", [
        {"id": 7, "question": "Q1?", "choices": ["x", "y", "z"], "answer": "C", "context": "ctx",
         "image": "img/a.png", "rationale": ["One. Two.", "Three."], "split": "test", "metadata": {"k": 1}},
        "",
        {"id": "b", "question": "Q2?", "choices": ["x", "y"], "answer": 0},
    ])
    assert str(import_jsonl(store, path)) == "2 new questions, 2 new gold rationales (0 already present)"
    found = rows(store, "SELECT dataset, source_id, split, answer_index, hint, image_path, image_sha256, metadata "
                        "FROM question ORDER BY id")
    assert [r[:7] + (r[7] and json.loads(r[7]),) for r in found] == [
        ("my_quiz", "7", "test", 2, "ctx", str((tmp_path / "img" / "a.png").resolve()),
         hashlib.sha256(b"png").hexdigest(), {"k": 1}),
        ("my_quiz", "b", "train", 0, "", None, None, None),
    ]
    assert rows(store, "SELECT sample_index, dedup_key FROM rationale ORDER BY id") == [
        (0, "gold:my_quiz:7:0"), (1, "gold:my_quiz:7:1")]
    assert rows(store, "SELECT COUNT(*) FROM sentence") == [(3,)]
    assert str(import_jsonl(store, path, dataset="other")).startswith("2 new questions")


@pytest.mark.parametrize(("line", "expected"), [
    ('{"id": "a", "question": "Q", "choices": ["x", "y"], "answer": "D"}',
     "line 2, field 'answer': index 3 is outside"),
    ('{"id": "a", "question": "Q", "choices": ["x", "y"], "answer": "maybe"}', "line 2, field 'answer': expected an "),
    ('{"id": "a", "question": "Q", "choices": "x"}', "line 2, field 'choices': expected a list of strings, got str"),
    ('{"question": "Q", "choices": ["x", "y"]}', "line 2, field 'id': missing"),
    ('{"id": "a", "question": "Q", "choices": ["x", "y"]', "record line 2: not valid JSON"),
    ('{"id": "ok", "question": "Q", "choices": ["x", "y"]}', "record ok: duplicate id"),
])
def test_jsonl_errors(cli, store, tmp_path, line, expected):
    path = _write_jsonl(tmp_path / "bad.jsonl", [{"id": "ok", "question": "Q", "choices": ["x", "y"]}, line])
    out = cli("import", "jsonl", path)
    assert out.exit_code == 1
    assert expected in out.stderr and str(path) in out.stderr
    assert store.table_counts()["question"] == 0


def test_example_set(cli, store):
    out = cli("import", "example")
    assert out.exit_code == 0, out.output
    assert out.stdout.strip() == "24 new questions, 24 new gold rationales (0 already present)"
    assert per_split(store, "science_demo") == {"train": 16, "test": 8}
    per_rationale = [n for (n,) in rows(store, "SELECT COUNT(*) FROM sentence GROUP BY rationale_id")]
    assert len(per_rationale) == 24 and min(per_rationale) >= 2 and max(per_rationale) <= 4
    assert rows(store, "SELECT COUNT(*) FROM question WHERE answer_index IS NULL OR hint = ''") == [(0,)]
    assert cli("import", "example").stdout.strip() == "0 new questions, 0 new gold rationales (24 already present)"
