"""benchmarks/ares_effect.py end to end at toy size: every arm through the real stages, one JSON line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ares_effect.py"


@pytest.mark.slow
def test_every_arm_runs_from_one_student_and_pays_the_teacher_it_should(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--questions", "4", "--test", "8", "--rounds", "1", "--k", "2",
         "--prep-steps", "20", "--work", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"base", "sft_only", "outcome_ppo", "ares", "ares_noisy"} <= result.keys()
    starts = {arm: rounds["accuracy"][0][0] for arm, rounds in result["per_round"].items()}
    assert len(set(starts.values())) == 1, starts  # every arm starts from the same prepared student
    calls = result["teacher_calls"]
    assert calls["base"] == 0 and calls["outcome_ppo"] == 4  # one grouped score call per question
    assert 0 < calls["sft_only"] <= 8  # one correction per distinct rollout (4 questions x k=2)
    assert calls["ares"] > 4 and calls["ares_noisy"] > 4  # grouped scores and corrections
    assert result["prepared"][0]["steps"] == 20
    # one seed: the paired difference is the difference of the two arms' final accuracies
    for arm in ("base", "ares"):
        assert result["vs_sft_only"][arm]["accuracy"][0] == pytest.approx(result[arm] - result["sft_only"], abs=2e-4)
    assert "sft_only" not in result["vs_sft_only"]
