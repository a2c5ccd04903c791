"""The ares_effect benchmark's statistics: paired differences, the seeds x questions bootstrap, the verdict rule."""

import json
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from ares_effect_stats import bootstrap, difference, paired, verdict


def test_paired_differences_are_per_question_and_need_the_same_questions():
    assert paired([[1, 0, 1]], [[0, 0, 1]]) == [[1, 0, 0]]
    with pytest.raises(ValueError, match="same seeds and questions"):
        paired([[1, 0]], [[1, 0, 1]])


def test_the_bootstrap_carries_question_variance_and_seed_variance():
    rng = random.Random(0)
    coins = [[float(rng.random() < 0.5) for _ in range(500)]]
    mean, low, high = bootstrap(coins)
    assert low < mean < high and (high - low) / 2 == pytest.approx(1.96 * (0.25 / 500) ** 0.5, abs=0.01)
    assert bootstrap([[0.3] * 50, [0.3] * 40]) == pytest.approx((0.3, 0.3, 0.3))
    # two students that disagree entirely: a questions-only bootstrap would say 0.5 exactly
    assert bootstrap([[0.0] * 100, [1.0] * 100]) == (0.5, 0.0, 1.0)
    # paired: a constant gain on noisy questions is exact, the students' spread cancels
    base = [[rng.random() for _ in range(100)] for _ in range(3)]
    assert difference([[x + 0.1 for x in s] for s in base], base) == pytest.approx((0.1, 0.1, 0.1))


def test_the_verdict_applies_the_rule_stated_in_advance():
    above, level, below = (0.05, 0.01, 0.09), (0.0, -0.04, 0.04), (-0.02, -0.05, 0.01)
    both = lambda a, c: {"llm": {"accuracy": a, "chain": c}, "sparse": {"accuracy": a, "chain": c}}  # noqa: E731
    assert verdict(both(above, level), both(level, above)) == "supported"  # chain or accuracy suffices
    assert verdict(both(above, above), both(level, level)) == "inconclusive"  # sentence rewards must beat outcome
    assert verdict(both(below, below), both(above, above)) == "refuted"
    assert verdict(both(level, below), both(above, above)) == "inconclusive"  # +0.04 not excluded
    assert verdict({"llm": {"accuracy": above}}, {"llm": {"accuracy": above}}) == "incomplete"


def test_the_rl_arms_differ_only_in_reward_placement_and_take_gae_or_grpo():
    from ares_effect_arms import Arm, Plan, arms_of, candidates, checked_advantages, rl_overrides

    from ares_train.ppo_config import PPOConfig

    plan = Plan(kinds=("base", "sft_only", "rl_outcome", "rl_sentence", "ares"), advantages=("gae", "grpo"))
    assert [a.name for a in arms_of(plan)] == ["base", "sft_only", "rl_outcome/gae", "rl_outcome/grpo",
                                               "rl_sentence/gae", "rl_sentence/grpo", "ares/gae", "ares/grpo"]
    outcome, sentence = (rl_overrides(plan, Arm(kind, "gae"), 3e-4) for kind in ("rl_outcome", "rl_sentence"))
    assert {k: v for k, v in outcome.items() if k != "reward_placement"} == {
        k: v for k, v in sentence.items() if k != "reward_placement"}
    assert (outcome["reward_placement"], sentence["reward_placement"]) == ("final", "sentence")
    PPOConfig(**sentence)  # every override is a PPOConfig field
    assert candidates(plan, Arm("ares", "gae"), sft_chosen=1e-3) == [{"rl": lr, "sft": 1e-3} for lr in plan.rl_lrs]
    assert sentence["advantage"] == "gae"
    assert rl_overrides(plan, Arm("rl_sentence", "grpo"), 3e-4)["advantage"] == "grpo"
    assert checked_advantages(("gae", "grpo")) == ("gae", "grpo")
    with pytest.raises(ValueError, match="rloo"):  # outcome rewards only: no sentence-reward arm can use it
        checked_advantages(("gae", "rloo"))


def test_every_seed_shares_the_preparation_questions_and_draws_its_own_others():
    from ares_effect_arms import Plan, seed_questions

    from ares_data.checkable import question_key

    plan = Plan(prep_questions=300, prep_dev=20, prep_calib=20, prep_calib_questions=50, round_questions=20,
                dev_questions=30, test_questions=40)
    first, second = seed_questions(plan, 0), seed_questions(plan, 1)
    prep = ("prep", "prep_long", "prep_dev", "calib", "prep_calib")
    assert all(first[split] == second[split] for split in prep)  # one student serves every seed
    prepared = {question_key(r) for split in prep for r in first[split]}
    for questions in (first, second):
        own = [question_key(r) for split in ("train", "dev", "test") for r in questions[split]]
        assert len(own) == len(set(own)) == 90 and not prepared & set(own)
    assert first["test"] != second["test"]  # fresh test questions per seed


def test_runs_on_different_profiles_combine_into_one_verdict(tmp_path):
    """llm and sparse run side by side (one process each) give one verdict over both."""
    from ares_effect import combine

    above, level = (0.05, 0.01, 0.09), (0.0, -0.04, 0.04)
    paths = []
    for profile in ("llm", "sparse"):
        line = {"arms": {profile: {}}, "plan": {"advantages": ["grpo"]}, "minutes": 1.0, "prepared": [],
                "differences": {profile: {"ares/grpo - sft_only": {"accuracy": above, "chain": level},
                                          "rl_sentence/grpo - rl_outcome/grpo": {"accuracy": above,
                                                                                 "chain": level}}}}
        paths.append(tmp_path / f"{profile}.out")
        paths[-1].write_text("table\n" + json.dumps(line) + "\n")
    assert combine(paths[:1])["verdict"] == {"grpo": "incomplete"}
    both = combine(paths)
    assert both["verdict"] == {"grpo": "supported"} and set(both["differences"]) == {"llm", "sparse"}


def test_a_student_below_the_band_is_calibrated_on_round_length_chains_from_its_cached_plateau(tmp_path):
    """The plateau phase is cached and reused; the calibration phase continues from its weights,
    counts its steps after the plateau's and stops at `prep_calib_steps` when the band is out of reach."""
    import torch
    from ares_effect_arms import Plan, prepare, seed_questions

    torch.set_num_threads(1)
    plan = Plan(prep_questions=40, prep_dev=4, prep_calib=4, prep_calib_questions=20, prep_batch=4,
                prep_max_steps=2, prep_check_every=2, prep_calib_steps=4, prep_calib_check_every=2,
                prep_band=(0.9, 1.0), max_new_tokens=8)
    questions = seed_questions(plan, 0)
    out = tmp_path / "student"
    info = prepare(plan, questions, 0, out)
    plateau = json.loads((out / "prepared.json").read_text())
    assert [check["step"] for check in plateau["trace"]] == [2]
    assert [check["step"] for check in info["trace"]] == [4, 6]
    assert info["model"] != plateau["model"] and Path(info["model"]).parent == out
    assert not info["calibrated"] and info["plateau"]["steps_run"] == 2
    from transformers import AutoModelForCausalLM

    start = AutoModelForCausalLM.from_pretrained(out).state_dict()  # the calibration moved the weights on
    trained = AutoModelForCausalLM.from_pretrained(info["model"]).state_dict()
    assert any(not torch.equal(start[k], trained[k]) for k in start)
    (out / "model.safetensors").unlink()  # both phases are cached: nothing is loaded or trained again
    assert prepare(plan, questions, 0, out) == info
