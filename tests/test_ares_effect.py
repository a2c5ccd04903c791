"""benchmarks/ares_effect.py end to end at toy size: every arm through the real stages, one JSON line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ares_effect.py"


@pytest.mark.slow
def test_every_arm_runs_from_one_student_on_equal_samples_and_reports_its_differences(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--profiles", "sparse", "--arms", "base,gold_sft,sft_only,rl_outcome,"
         "rl_sentence,ares", "--advantages", "gae,grpo", "--seeds", "1", "--rounds", "1", "--questions", "2",
         "--samples", "4", "--dev", "8", "--test", "8", "--prep-steps", "20", "--calib-steps", "10",
         "--prep-questions", "300",
         "--prep-held-out", "8", "--rl-lrs", "1e-3", "--sft-lrs", "1e-3", "--threads", "1", "--work", str(tmp_path)],
        capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    prepared = result["prepared"][0]  # the plateau phase (20 steps) left it below the band: calibrated 10 more
    assert (prepared["plateau"]["steps_run"], prepared["steps_run"]) == (20, 30)
    advantages = result["plan"]["advantages"]
    assert advantages == ["gae", "grpo"]
    rl = [f"{kind}/{a}" for kind in ("rl_outcome", "rl_sentence", "ares") for a in advantages]
    assert set(result["arms"]) == {"sparse"}
    assert set(result["arms"]["sparse"]) == {"base", "gold_sft", "sft_only", *rl}
    for arms in result["arms"].values():
        starts = {name: arm["dev_accuracy"][0] for name, arm in arms.items()}
        assert len(set(starts.values())) == 1, starts  # every arm starts from the same prepared student
        samples = {name: arm["samples_per_round"] for name, arm in arms.items() if name != "base"}
        assert set(map(tuple, samples.values())) == {(8.0,)}, samples  # 2 questions x 4, ares 2 x (2 x 2)
        assert arms["base"]["teacher_tokens_out"] == 0 and all(arm["teacher_tokens_out"] > 0 for name, arm in
                                                               arms.items() if name != "base")
        assert len(arms["ares/gae"]["dev_accuracy_rl"]) == 1  # its RL checkpoint measured too
        for arm in arms.values():
            mean, low, high = arm["test_accuracy"]
            assert low <= mean <= high
    # one seed: the paired difference is the difference of the two arms' test accuracies
    diff = result["differences"]["sparse"]["ares/gae - sft_only"]["accuracy"]
    arms = result["arms"]["sparse"]
    assert diff[0] == pytest.approx(arms["ares/gae"]["test_accuracy"][0] - arms["sft_only"]["test_accuracy"][0],
                                    abs=2e-4)
    assert {"rl_sentence/gae - rl_outcome/gae", "sft_only - gold_sft"} <= result["differences"]["sparse"].keys()
    assert result["verdict"]["gae"] == "incomplete"  # the llm profile did not run
