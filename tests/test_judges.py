"""The checkable task family and the rule teacher, alone and through the real collectors on 127.0.0.1."""

import asyncio
import json
import sys
from itertools import permutations

import pytest
from sqlmodel import select

from ares_data.checkable import main as checkable_main
from ares_data.checkable import (chain_is_correct, gold_steps, make_family, make_tasks, parse_distractor,
                                 parse_question, parse_step, question_space, write_tasks)
from ares_data.fake_teacher import serve_in_thread
from ares_data.judges import check, make_judge, problem_of
from ares_data.splitter import split_sentences
from ares_data.tables import Correction, Question, Rationale, Sentence, SentenceScore
from ares_data.teacher import TeacherConfig, collect_corrections, collect_scores
from servers import free_port, running

# Start with 7, add 2, subtract 9, then add 8 -> 8, option (B) of 6, 8, 9, 4.
PROMPT = ("Question: Start with 7, add 2, subtract 9, then add 8. What number do you get?\n"
          "Options: (A) 6 (B) 8 (C) 9 (D) 4\nContext: N/A\nCorrect answer: (B) 8\n")
GOLD = ["7 plus 2 is 9.", "9 minus 9 is 0.", "0 plus 8 is 8.", "The answer is (B)."]


def test_tasks_are_seeded_checkable_and_split():
    tasks = make_tasks(30, 10, seed=3)
    assert tasks == make_tasks(30, 10, seed=3) and tasks != make_tasks(30, 10, seed=4)
    assert [t["split"] for t in tasks].count("test") == 10
    assert len({t["question"] for t in tasks}) == 40  # no test question is a train question
    for t in tasks:
        start, ops = parse_question(t["question"])
        steps = [parse_step(s.text) for s in split_sentences(t["rationale"])[:-1]]
        assert steps[0].left == start and all(s.true and 0 <= s.result <= 9 for s in steps)
        assert int(t["choices"][t["answer"]]) == steps[-1].result and t["choices"] == [str(d) for d in range(10)]


def test_a_chain_is_correct_only_when_every_step_before_the_answer_is_the_gold_one():
    question = "Start with 7, add 2, subtract 9, then add 8. What number do you get?"
    assert chain_is_correct(question, " ".join(GOLD))
    assert chain_is_correct(question, " ".join([*GOLD[:3], "The answer is (A)."]))  # the letter is not the chain
    assert not chain_is_correct(question, " ".join([GOLD[0], "9 minus 9 is 1.", *GOLD[2:]]))
    assert not chain_is_correct(question, " ".join([GOLD[0], GOLD[2], GOLD[3]]))  # a step left out
    assert chain_is_correct(question, "7 plus 8 is 15. 15 minus 9 is 6. 6 plus 2 is 8. The answer is (I).")  # reordered
    assert not chain_is_correct("What is 2 plus 2?", " ".join(GOLD))  # not of the family


def test_asking_for_more_questions_than_the_family_has_is_one_clear_error(tmp_path, capsys):
    assert len(question_space()) == 7290 == len({(start, tuple(ops)) for start, ops in question_space()})
    with pytest.raises(ValueError, match="only 7290 distinct"):
        make_tasks(7290, 1)
    with pytest.raises(SystemExit):
        checkable_main([str(tmp_path / "t.jsonl"), "--train", "7290"])
    assert "only 7290 distinct questions" in capsys.readouterr().err and not (tmp_path / "t.jsonl").exists()


def prompt(question: str, answer: int) -> str:
    """A correction or scoring prompt's fields for a question with the ten digits as options."""
    options = " ".join(f"({letter}) {d}" for letter, d in zip("ABCDEFGHIJ", range(10)))
    return (f"Question: {question}\nOptions: {options}\nContext: N/A\n"
            f"Correct answer: ({'ABCDEFGHIJ'[answer]}) {answer}\n")


# Start with 8, subtract 6, then add 5 -> 7; the v2 twin has a distractor, 9.
SHORT = prompt("Start with 8, subtract 6, then add 5. What number do you get?", 7)
DISTRACTED = prompt("A bag holds 9 marbles. Start with 8, subtract 6, then add 5. What number do you get?", 7)
SHORT_GOLD = "8 minus 6 is 2. 2 plus 5 is 7. The answer is (H)."


def test_the_arith_judge_checks_each_sentence():
    judge = make_judge("arith")
    assert judge.scores(PROMPT, GOLD) == [1.0, 1.0, 1.0, 1.0]
    # a false sum, a true sum on the wrong operand, a true sum from a wrong running value, a repeat, a wrong letter
    assert judge.scores(PROMPT, ["7 plus 2 is 8.", "7 plus 3 is 10.", "2 plus 2 is 4.", "7 plus 2 is 8.",
                                 "The answer is (A)."]) == [0.0, 0.0, 0.0, 0.0, 0.0]
    assert judge.scores(PROMPT, ["7 plus 2 is 9.", "9 minus 9 is", "nonsense"]) == [1.0, 0.0, 0.0]


def test_a_true_sentence_off_the_running_value_is_wrong_unless_it_is_about_the_distractor():
    judge = make_judge("arith")
    # issue 28: "9 minus 2 is 7." is true, but 9 is not the running value (2): a wrong running value
    assert judge.scores(SHORT, ["8 minus 6 is 2.", "9 minus 2 is 7."]) == [1.0, 0.0]
    # with 9 the question's distractor, the same sentence is true but useless: 0.5, and the chain goes on
    assert judge.scores(DISTRACTED, ["8 minus 6 is 2.", "9 minus 2 is 7.", "2 plus 5 is 7.",
                                     "The answer is (H)."]) == [1.0, 0.5, 1.0, 1.0]
    assert judge.scores(DISTRACTED, ["9 minus 6 is 3.", "3 plus 5 is 8."]) == [0.5, 0.0]  # 3 is no running value
    assert judge.scores(DISTRACTED, ["8 minus 6 is 2.", "2 plus 6 is 8."]) == [1.0, 0.0]  # an operation used twice


def test_a_correction_keeps_the_useful_steps_and_rewrites_from_the_first_wrong_one_without_detours():
    judge = make_judge("arith")
    assert judge.correct(PROMPT, "7 plus 2 is 9. 9 minus 9 is 1. 1 plus 8 is 9. The answer is (C).") == " ".join(GOLD)
    assert judge.correct(PROMPT, "2 plus 2 is 4. 7 plus 2 is 9.") == " ".join(GOLD)
    assert judge.correct(PROMPT, " ".join(GOLD)) == " ".join(GOLD)
    assert judge.correct(SHORT, "8 minus 6 is 2. 9 minus 2 is 7.") == SHORT_GOLD
    # a detour about the distractor is dropped, the useful steps around it kept
    assert judge.correct(DISTRACTED, "8 minus 6 is 2. 9 minus 2 is 7. 2 plus 5 is 7. The answer is (H).") == SHORT_GOLD
    assert judge.correct(DISTRACTED, "9 minus 2 is 7. 8 minus 6 is 2. 2 plus 5 is 8.") == SHORT_GOLD
    # a right start in another valid order is kept and finished in that order
    reordered = "8 plus 5 is 13. 13 minus 6 is 7. The answer is (H)."
    assert judge.correct(SHORT, "8 plus 5 is 13. 13 minus 6 is 8.") == reordered
    assert make_judge("gold").correct(SHORT, reordered) == SHORT_GOLD  # the oracle writes the gold chain


def test_a_correct_chain_is_accepted_in_any_valid_order_and_only_then():
    question = "A bag holds 1 marbles. Start with 3, add 4, subtract 5, then add 2. What number do you get?"
    ops = [("plus", 4), ("minus", 5), ("plus", 2)]
    valid = 0
    for order in permutations(ops):
        value, sentences = 3, []
        for word, n in order:
            new = value + n if word == "plus" else value - n
            sentences.append(f"{value} {word} {n} is {new}.")
            value = new
        rationale = " ".join([*sentences, "The answer is (E)."])
        if "-" in rationale:  # 3 minus 5 is -2: no sentence of the grammar states it
            assert not chain_is_correct(question, rationale)
            continue
        valid += 1
        assert chain_is_correct(question, rationale), rationale
        problem = problem_of(question, 10, 4)
        assert [score for score, _ in check(problem, [*sentences, "The answer is (E)."])] == [1.0] * 4
    assert valid == 4  # 2 of the 6 orders subtract 5 from 3 first
    assert not chain_is_correct(question, "3 plus 4 is 7. 7 plus 2 is 9. The answer is (E).")  # one left out
    assert not chain_is_correct(question, "3 plus 4 is 7. 7 plus 4 is 11. 11 minus 5 is 6. The answer is (G).")


def test_v2_questions_are_long_seeded_distinct_and_carry_a_distractor(tmp_path):
    records = make_family({"train": (40, 2, 4), "dev": (30, 5, 6), "test": (30, 5, 6)}, seed=2)
    assert records == make_family({"train": (40, 2, 4), "dev": (30, 5, 6), "test": (30, 5, 6)}, seed=2)
    assert records != make_family({"train": (40, 2, 4), "dev": (30, 5, 6), "test": (30, 5, 6)}, seed=3)
    assert len({r["question"].split(". ", 1)[1] for r in records}) == 100  # no question in two splits
    judge = make_judge("arith")
    for r in records:
        start, ops = parse_question(r["question"])
        distractor = parse_distractor(r["question"])
        steps = gold_steps(start, ops)
        assert distractor not in {start, *(s.result for s in steps)} and 1 <= distractor <= 9
        assert (5 <= len(ops) <= 6) if r["split"] != "train" else 2 <= len(ops) <= 4
        assert chain_is_correct(r["question"], r["rationale"]) and all(0 <= s.result <= 9 for s in steps)
        sentences = [s.text for s in split_sentences(r["rationale"])]
        assert judge.scores(prompt(r["question"], r["answer"]), sentences) == [1.0] * len(sentences)
    checkable_main([str(tmp_path / "v2.jsonl"), "--train", "5", "--test", "5", "--family", "v2"])
    written = [json.loads(line) for line in (tmp_path / "v2.jsonl").read_text().splitlines()]
    assert len(written) == 10 and all(parse_distractor(r["question"]) for r in written)


@pytest.fixture
def arith_store(store, cli, tmp_path):
    """The family imported through `ares import jsonl`, one wrong and one right student rationale per question."""
    path = tmp_path / "arith.jsonl"
    write_tasks(path, train=3, test=2, seed=0)
    result = cli("import", "jsonl", path)
    assert result.exit_code == 0, result.output
    with store.session() as session:
        questions = session.exec(select(Question).where(Question.split == "train")).all()
        assert len(questions) == 3 and len(session.exec(select(Question)).all()) == 5
        for q in questions:
            gold = session.exec(select(Rationale).where(Rationale.question_id == q.id,
                                                        Rationale.source == "gold")).one().text
            first = gold.split(". ")[0]
            wrong = gold.replace(first, first.rsplit(" ", 1)[0] + " 10", 1)
            for index, text in enumerate((wrong, gold)):
                store.add_rationale(session, question_id=q.id, source="student", text=text, round=1,
                                    sample_index=index, dedup_key=f"t:{q.id}:{index}")
    return store


def _expected(store) -> dict[int, list[float]]:
    """What the judge says of each student rationale, from the store's own question and sentences."""
    out = {}
    with store.session() as session:
        for r in session.exec(select(Rationale).where(Rationale.source == "student")):
            q = session.get(Question, r.question_id)
            sentences = [s.text for s in session.exec(select(Sentence).where(Sentence.rationale_id == r.id)
                                                      .order_by(Sentence.idx))]
            out[r.id] = [score for score, _ in check(problem_of(q.question, len(q.choices), q.answer_index),
                                                     sentences)]
    return out


@pytest.mark.parametrize("grouped", [True, False])
def test_collectors_store_the_judges_scores(arith_store, grouped):
    with serve_in_thread(judge=make_judge("arith")) as url:
        config = TeacherConfig.from_options(base_url=url, model="rule", rpm=6000, timeout=5)
        summary = asyncio.run(collect_scores(arith_store, config, round=1, group_by_question=grouped))
    assert summary.done == 6
    expected = _expected(arith_store)
    with arith_store.session() as session:
        stored = {}
        for sentence, score in session.exec(select(Sentence, SentenceScore)
                                            .join(SentenceScore, SentenceScore.sentence_id == Sentence.id)
                                            .order_by(Sentence.idx)):
            stored.setdefault(sentence.rationale_id, []).append(score.score)
    assert stored == expected
    assert sorted(min(s) for s in stored.values()) == [0.0] * 3 + [1.0] * 3  # one wrong step in each wrong one


def test_the_cli_fake_teacher_corrects_through_the_collector(arith_store, tmp_path):
    port = free_port()
    argv = [sys.executable, "-m", "ares_data.cli", "fake-teacher", "--port", str(port), "--judge", "arith"]
    with running(argv, f"http://127.0.0.1:{port}/v1/models", tmp_path / "fake.log"):
        config = TeacherConfig.from_options(base_url=f"http://127.0.0.1:{port}/v1", model="rule", rpm=6000)
        summary = asyncio.run(collect_corrections(arith_store, config, round=1))
    assert summary.done == 6
    with arith_store.session() as session:
        pairs = [(session.get(Rationale, c.rationale_id), session.get(Rationale, c.corrected_rationale_id))
                 for c in session.exec(select(Correction))]
        gold = {r.question_id: r.text for r in session.exec(select(Rationale).where(Rationale.source == "gold"))}
    assert len(pairs) == 6 and all(new.text == gold[old.question_id] for old, new in pairs)
    assert sum(new.text == old.text for old, new in pairs) == 3  # a right rationale is left as it is


def test_the_cli_fake_teacher_applies_its_profile_over_loopback(arith_store, tmp_path):
    port = free_port()
    argv = [sys.executable, "-m", "ares_data.cli", "fake-teacher", "--port", str(port), "--judge", "arith",
            "--profile", "llm", "--score-flip", "1", "--miss-late", "0", "--correction-missing", "0",
            "--fix-first-only", "0", "--new-slip", "0", "--correction-invalid", "1"]
    with running(argv, f"http://127.0.0.1:{port}/v1/models", tmp_path / "fake.log"):
        config = TeacherConfig.from_options(base_url=f"http://127.0.0.1:{port}/v1", model="rule", rpm=6000)
        asyncio.run(collect_scores(arith_store, config, round=1, group_by_question=True))
        asyncio.run(collect_corrections(arith_store, config, round=1))
    flipped = {rid: [round(1 - s, 1) for s in scores] for rid, scores in _expected(arith_store).items()}
    with arith_store.session() as session:
        stored = {}
        for sentence, score in session.exec(select(Sentence, SentenceScore)
                                            .join(SentenceScore, SentenceScore.sentence_id == Sentence.id)
                                            .order_by(Sentence.idx)):
            stored.setdefault(sentence.rationale_id, []).append(score.score)
        assert stored == flipped  # every score flipped, as --score-flip 1 says
        assert session.exec(select(Correction)).all() == []  # every correction empty, refused by the collector
