"""Importers on the real samples: exact counts and fields, idempotence, and all-or-nothing errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ares_data.errors import ImportDataError
from ares_data.importers import import_aokvqa, import_example, import_jsonl, import_scienceqa

pytestmark = pytest.mark.both_backends  # every importer / exporter also runs on PostgreSQL
SUMMARY_150 = "150 new questions, 149 new gold rationales (0 already present)"  # pid 58 has neither


@pytest.fixture
def sqa(shared_data) -> dict[str, Path]:
    root = shared_data / "scienceqa"
    return {"problems": root / "problems.sample150.json", "splits": root / "pid_splits.sample150.json",
            "full_splits": root / "pid_splits.json", "captions": root / "captions.json"}


@pytest.fixture
def aokvqa_val(shared_data) -> Path:
    return shared_data / "aokvqa" / "aokvqa_v1p0_val.json"


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
    out = cli("import", "scienceqa", sqa["problems"], "--splits", sqa["splits"], "--captions", sqa["captions"])
    assert out.exit_code == 0, out.output
    assert out.stdout.strip() == SUMMARY_150
    assert per_split(store, "scienceqa") == {"train": 50, "val": 50, "test": 50}
    (q,) = rows(store, "SELECT question, choices, answer_index, hint, caption, image_path, image_sha256, subject, "
                       "grade, metadata, split FROM question WHERE source_id = '1'")
    assert q[0] == "Which of these states is farthest north?"
    assert json.loads(q[1]) == ["West Virginia", "Louisiana", "Arizona", "Oklahoma"]
    assert q[2:9] == (0, "", "An aerial view of a painting of a forest.", "train/1/image.png", None,
                      "social science", "grade2")
    assert json.loads(q[9]) == {"topic": "geography", "category": "Geography",
                                "skill": "Read a map: cardinal directions", "task": "closed choice"}
    assert q[10] == "train"
    assert rows(store, "SELECT COUNT(*) FROM question WHERE caption != ''") == [(67,)]
    assert rows(store, "SELECT COUNT(*) FROM question WHERE image_path IS NOT NULL") == [(67,)]

    (gold,) = rows(store, "SELECT r.text, r.source, r.sample_index, r.dedup_key FROM rationale r "
                          "JOIN question q ON q.id = r.question_id WHERE q.source_id = '1'")
    assert gold[0].startswith("Maps have four cardinal directions") and "\n\nTo find the answer" in gold[0]
    assert gold[1:] == ("gold", 0, "gold:scienceqa:1:0")
    sentences = [r[0] for r in rows(store, "SELECT s.text FROM sentence s JOIN rationale r ON r.id = s.rationale_id "
                                           "WHERE r.dedup_key = 'gold:scienceqa:1:0' ORDER BY s.idx")]
    assert len(sentences) == 9
    assert sentences[5:] == ["On most maps, north is at the top of the map.",
                             "To find the answer, look at the compass rose.",
                             "Look at which way the north arrow is pointing.", "West Virginia is farthest north."]
    assert_spans_exact(store)

    again = cli("import", "scienceqa", sqa["problems"], "--splits", sqa["splits"])
    assert again.stdout.strip() == "0 new questions, 0 new gold rationales (150 already present)"
    assert store.table_counts()["sentence"] == rows(store, "SELECT COUNT(*) FROM sentence")[0][0]


def test_scienceqa_with_the_full_official_split_file(store, sqa):
    result = import_scienceqa(store, sqa["problems"], sqa["full_splits"])
    assert str(result) == SUMMARY_150
    assert per_split(store, "scienceqa") == {"train": 50, "val": 50, "test": 50}  # trainval/mini* ignored
    assert rows(store, "SELECT caption FROM question WHERE source_id = '1'") == [("",)]  # no captions file


def test_problems_missing_from_the_split_file_keep_their_own_split(store, sqa, tmp_path):
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"test": ["1", "2"]}))  # pids 1 and 2 are train in the problems
    import_scienceqa(store, sqa["problems"], splits)
    assert per_split(store, "scienceqa") == {"train": 48, "val": 50, "test": 52}
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
    out = cli("import", "aokvqa", aokvqa_val)
    assert out.exit_code == 0, out.output
    assert out.stdout.strip() == "1145 new questions, 3435 new gold rationales (0 already present)"
    (q,) = rows(store, "SELECT id, question, answer_index, split, image_path, metadata FROM question "
                       "WHERE dataset = 'aokvqa' AND source_id = '22jbM6gDxdaMaunuzgrsBB'")
    assert q[1:5] == ("What is in the motorcyclist's mouth?", 3, "val", "val2017/000000461751.jpg")
    assert json.loads(q[5])["image_id"] == 461751 and json.loads(q[5])["difficult_direct_answer"] is False
    gold = rows(store, "SELECT sample_index, text, dedup_key FROM rationale WHERE question_id = :q "
                       "ORDER BY sample_index", q=q[0])
    assert [g[0] for g in gold] == [0, 1, 2]
    assert gold[0][1:] == ("He's smoking while riding.", "gold:aokvqa:22jbM6gDxdaMaunuzgrsBB:0")
    assert_spans_exact(store)

    before = store.table_counts()
    again = cli("import", "aokvqa", aokvqa_val)
    assert again.stdout.strip() == "0 new questions, 0 new gold rationales (1145 already present)"
    assert store.table_counts() == before


def test_aokvqa_test_file_without_answers(store, aokvqa_val, tmp_path):
    keep = ("split", "image_id", "question_id", "question", "choices")
    questions = [{k: q[k] for k in keep} | {"split": "test"} for q in json.loads(aokvqa_val.read_text())[:20]]
    test_file = tmp_path / "aokvqa_v1p0_test.json"
    test_file.write_text(json.dumps(questions))
    assert str(import_aokvqa(store, test_file)) == "20 new questions, 0 new gold rationales (0 already present)"
    assert rows(store, "SELECT COUNT(*), COUNT(answer_index) FROM question") == [(20, 0)]
    assert rows(store, "SELECT image_path FROM question WHERE source_id = :s", s=questions[0]["question_id"]) == [
        (f"test2017/{questions[0]['image_id']:012d}.jpg",)
    ]
    assert store.table_counts()["rationale"] == 0


# -- corrupted files: one line naming file, record and field; nothing written ----------------------

def _corrupt_scienceqa(problems: Path, how: str) -> str:
    text = problems.read_text()
    data = json.loads(text)
    if how == "truncated":
        return text[: len(text) // 2]
    if how == "missing choices":
        del data["150"]["choices"]
    if how == "answer as string":
        data["150"]["answer"] = "0"
    return json.dumps(data)


@pytest.mark.parametrize(("how", "expected"), [
    ("truncated", "record at line "),
    ("missing choices", "record 150, field 'choices': missing"),
    ("answer as string", "record 150, field 'answer': expected an integer, got str"),
])
def test_corrupted_scienceqa_imports_nothing(cli, store, sqa, tmp_path, how, expected):
    import_example(store)
    before = store.table_counts()
    bad = tmp_path / "problems.json"
    bad.write_text(_corrupt_scienceqa(sqa["problems"], how))
    out = cli("import", "scienceqa", bad, "--splits", sqa["splits"])
    assert out.exit_code == 1
    (line,) = out.stderr.strip().splitlines()
    assert str(bad) in line and expected in line
    assert store.table_counts() == before


def test_corrupted_aokvqa_names_the_question(store, aokvqa_val, tmp_path):
    data = json.loads(aokvqa_val.read_text())
    data[1000]["rationales"] = "not a list"
    bad = tmp_path / "val.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ImportDataError) as error:
        import_aokvqa(store, bad)
    assert str(error.value) == (f"{bad}: record {data[1000]['question_id']}, field 'rationales': "
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
