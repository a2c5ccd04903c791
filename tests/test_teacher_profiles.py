"""Teacher profiles: a fallible rule teacher's errors come out at the configured rates, drawn per request."""

import random
from dataclasses import replace

import pytest

from ares_data.checkable import chain_is_correct, make_family, parse_step
from ares_data.judges import ArithJudge, make_judge, read_problem
from ares_data.splitter import split_sentences
from ares_data.teacher_profiles import LLM, PROFILES, FallibleJudge, Profile, fix_first_only, make_profile
from test_judges import prompt

CALLS = 400


@pytest.fixture(scope="module")
def cases() -> list[tuple[str, list[str], str]]:
    """(prompt, student sentences, question) for CALLS long questions; the student's chain is right up
    to one early error (step 2's result off by one) and then continues from its own wrong value, so
    every later step is false too."""
    rng = random.Random(0)
    out = []
    for r in make_family({"test": (CALLS, 5, 6)}, seed=7):
        steps = [parse_step(s.text) for s in split_sentences(r["rationale"])[:-1]]
        wrong, value = [], None
        for i, step in enumerate(steps):
            if i == 1:
                value = step.result + (1 if step.result < 9 else -1)
                wrong.append(replace(step, result=value).sentence())
            elif i > 1:
                value = value + step.op * step.right + 1  # false: off by one
                wrong.append(replace(step, left=value - step.op * step.right - 1, result=value).sentence())
            else:
                wrong.append(step.sentence())
        wrong.append(f"The answer is ({'ABCDEFGHIJ'[rng.randrange(10)]}).")
        out.append((prompt(r["question"], r["answer"]), wrong, r["question"]))
    return out


def test_profiles_check_their_rates_and_the_rate_flags_set_one_over_a_profile():
    assert PROFILES["exact"].exact and not LLM.exact and PROFILES["sparse"].corrected_share == 0.25
    assert make_profile("llm", score_flip=0.3, miss_late=None) == replace(LLM, score_flip=0.3)
    assert isinstance(make_judge("arith", PROFILES["exact"]), ArithJudge)
    with pytest.raises(ValueError, match="add up to 1.10"):
        make_profile("llm", fix_first_only=0.8)
    with pytest.raises(ValueError, match="score_flip is a share"):
        Profile(score_flip=1.5)


def test_score_errors_come_at_the_configured_rates_and_per_request(cases):
    exact, judge = ArithJudge(), FallibleJudge(ArithJudge(), Profile(score_flip=0.1, miss_late=0.25), seed=3)
    flipped_right = right = missed = late_false = early_false = early_false_raised = 0
    for text, sentences, _ in cases:
        truth, given = exact.scores(text, sentences), judge.scores(text, sentences)
        assert given == judge.scores(text, sentences)  # the same request, the same answer
        for i, (t, g) in enumerate(zip(truth, given)):
            late = i >= len(sentences) / 2 and "answer" not in sentences[i]
            if t == 1.0:
                right, flipped_right = right + 1, flipped_right + (g == 0.0)
            elif late:  # a missed false step scores 1.0 unless the flip then turns it back
                late_false, missed = late_false + 1, missed + (g == 1.0)
            else:
                early_false, early_false_raised = early_false + 1, early_false_raised + (g == 1.0)
    assert right > 400 and late_false >= 800 and early_false >= 800
    assert flipped_right / right == pytest.approx(0.1, abs=0.04)
    assert missed / late_false == pytest.approx(0.25 * 0.9 + 0.75 * 0.1, abs=0.05)  # missed, or flipped
    assert early_false_raised / early_false == pytest.approx(0.1, abs=0.04)  # early false steps only ever flip
    # per request, not per sentence: the same gold first step is punished in some calls, not in all
    first_step_flips = [judge.scores(text, [sentences[0], f"extra {n}."])[0] for n in range(60)
                        for text, sentences, _ in cases[:1]]
    assert 0 < first_step_flips.count(0.0) < 20


def test_correction_errors_come_at_the_configured_rates(cases):
    judge = FallibleJudge(ArithJudge(), LLM, seed=3)
    kinds = {"missing": 0, "invalid": 0, "fix_first_only": 0, "new_slip": 0, "valid": 0, "other_order": 0}
    for text, sentences, question in cases:
        rationale = " ".join(sentences)
        out = judge.correct(text, rationale)
        exact = ArithJudge().correct(text, rationale)
        if out == rationale:
            kinds["missing"] += 1
        elif out == "":
            kinds["invalid"] += 1
        elif out == " ".join(fix_first_only(read_problem(text), sentences)):
            kinds["fix_first_only"] += 1
        elif chain_is_correct(question, out):
            kinds["valid"] += 1
            kinds["other_order"] += out != exact
        else:
            steps = [parse_step(s.text) for s in split_sentences(out)[:-1]]
            assert sum(not s.true for s in steps) == 1, out  # one slip, everything else right
            kinds["new_slip"] += 1
    shares = {kind: n / CALLS for kind, n in kinds.items()}
    for kind, expected in (("missing", 0.1), ("invalid", 0.1), ("fix_first_only", 0.2), ("new_slip", 0.1),
                           ("valid", 0.5)):
        assert shares[kind] == pytest.approx(expected, abs=0.05), (kind, shares)
    assert 0.1 < kinds["other_order"] / kinds["valid"] <= 0.5  # half are reshuffled; some shuffles are the default


def test_sparse_corrects_a_quarter_of_the_questions_every_time_it_is_asked(cases):
    judge = FallibleJudge(ArithJudge(), Profile(corrected_share=0.25), seed=1)
    answered = [judge.correct(text, " ".join(sentences)) != "" for text, sentences, _ in cases]
    assert sum(answered) / CALLS == pytest.approx(0.25, abs=0.06)
    again = [judge.correct(text, " ".join(sentences[:2])) != "" for text, sentences, _ in cases]
    assert again == answered  # coverage is the question's, whatever the rationale
