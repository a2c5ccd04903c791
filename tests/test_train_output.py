"""Training output as TRL users know it: a step bar and a one-line summary (the per-step table on
request), other libraries quiet unless --verbose, a help that fits a screen, and --report-to."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import select

from ares_data.tables import TrainingRun

TEXTS = ["Zero is even. The answer is (A).", "One is odd. The answer is (B).", "Two is even. The answer is (A).",
         "Three is odd. So the answer is (B)."]
RL = ("train", "rl", "--round", "1", "--batch-size", "2", "--epochs", "1")
SFT = ("train", "sft", "--round", "1", "--epochs", "2", "--batch-size", "4")
# Other libraries' output seen on a plain run before it was silenced (weights loading, datasets' bars, PEFT).
NOISE = ("Loading weights", "Generating train split", "Creating parquet", "Tokenizing train dataset",
         "is_gradient_checkpointing")


@pytest.fixture
def scored_round(feedback) -> None:
    """Round 1: four rollouts of two sentences, each scored and corrected (as the collectors would)."""
    for n, text in enumerate(TEXTS):
        rollout = feedback.rollout(feedback.question(n, answer=n % 2), text)
        feedback.score(rollout, [0.9, 0.2])
        feedback.correct(rollout, text)


def _run(store, kind: str) -> TrainingRun:
    with store.session() as session:
        return session.exec(select(TrainingRun).where(TrainingRun.kind == kind)).one()


def _ares(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    """`ares ARGS` in a fresh process: warnings and other libraries' bars reach stderr as for a user."""
    return subprocess.run([sys.executable, "-m", "ares_data.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def _scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar TensorBoard finds under `directory`: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    found = EventMultiplexer().AddRunsFromDirectory(str(directory))
    found.Reload()
    return {tag: [(e.step, e.value) for e in found.Scalars(run, tag)]
            for run, tags in found.Runs().items() for tag in tags["scalars"]}


def _help(cli, monkeypatch, columns: int, *command: str) -> str:
    monkeypatch.setenv("COLUMNS", str(columns))
    return cli(*command, "--help").stdout


def test_train_rl_help_is_grouped_and_short(cli, monkeypatch):
    assert len(_help(cli, monkeypatch, 120, "train", "rl").splitlines()) < 100  # 138 before
    rl, sft = _help(cli, monkeypatch, 100, "train", "rl"), _help(cli, monkeypatch, 100, "train", "sft")
    assert max(map(len, rl.splitlines())) <= 100
    assert "<bool>" not in rl + sft  # a flag takes no value
    assert "<auto|float32|bfloat16|float16>" in rl  # the choices whole, not `floa t16`
    assert "PPO: optimisation" in rl and "PPO: rewards" in rl and "SFT: LoRA" in sft  # a panel per section
    assert "--lora-dropout" not in rl and "--lora-dropout" in sft  # PPO turns every dropout off
    assert "--no-whiten-advantages" in rl and "--whiten-advantages " not in rl  # one switch: flips the default


@pytest.mark.slow  # ~40 s: a PPO and an SFT run of the tiny student
def test_rl_and_sft_show_a_bar_and_a_summary_and_log_to_tensorboard(cli, store, scored_round, tiny_model_dir):
    result = cli(*RL, "--model", tiny_model_dir, "--no-whiten-advantages", "--report-to", "tensorboard")
    assert result.exit_code == 0, result.output
    run = _run(store, "rl")
    steps = run.metrics["steps"]
    assert len(steps) == 2 and run.config["whiten_advantages"] is False and run.config["report_to"] == "tensorboard"
    bar = [line for line in result.stderr.splitlines() if line.startswith("PPO")]
    assert bar and "2/2" in bar[-1] and all(f" {m} " in bar[-1] for m in ("reward", "kl", "loss"))
    out = result.stdout.splitlines()
    assert out[0].startswith("round-1-rl: 2 steps, mean reward ") and " kl " in out[0] and " loss " in out[0]
    assert out[1].startswith("registered round-1-rl") and len(out) == 2  # no 20-column table
    # Every step reached TensorBoard under transformers' names, with the values the store keeps.
    logged = _scalars(_checkpoint_dir("round-1-rl"))
    for name in ("mean_reward", "kl", "policy_loss", "value_loss", "entropy"):
        assert [step for step, _ in logged[f"train/{name}"]] == [s["step"] for s in steps]
        assert [value for _, value in logged[f"train/{name}"]] == pytest.approx([s[name] for s in steps], abs=1e-6)

    result = cli(*SFT, "--report-to", "tensorboard")
    assert result.exit_code == 0, result.output
    sft = _run(store, "sft")
    assert "{'loss'" not in result.stdout  # transformers' printer callback is gone
    assert result.stdout.startswith(f"round-1-sft: {len(sft.metrics['steps'])} steps, mean loss ")
    assert any(line.startswith("SFT") and "2/2" in line for line in result.stderr.splitlines())
    logged = _scalars(_checkpoint_dir("round-1-sft"))
    assert [step for step, _ in logged["train/loss"]] == [s["step"] for s in sft.metrics["steps"]]


def _checkpoint_dir(name: str) -> Path:
    return Path(os.environ["ARES_HOME"]) / "checkpoints" / name


@pytest.mark.slow  # ~60 s: two fresh processes
def test_other_libraries_are_quiet_unless_verbose(store, scored_round, tiny_model_dir, tmp_path):
    quiet = _ares(*RL, "--model", tiny_model_dir, "--report-to", "wandb",
                  env={"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path)})
    assert quiet.returncode == 0, quiet.stderr
    assert not [n for n in NOISE if n in quiet.stderr], quiet.stderr
    assert "metrics per step" not in quiet.stdout
    # wandb, offline: the run file holds the step metrics
    (wandb_run,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    assert b"train/mean_reward" in wandb_run.read_bytes() and b"train/policy_loss" in wandb_run.read_bytes()

    loud = _ares(*SFT, "--verbose")
    assert loud.returncode == 0, loud.stderr
    assert "Tokenizing train dataset" in loud.stderr and "is_gradient_checkpointing" in loud.stderr
    assert "round-1-sft: metrics per step" in loud.stdout  # --verbose: the per-step table too


@pytest.mark.slow  # ~30 s: a PRM run in a fresh process
def test_prm_logs_to_trackio_offline(store, scored_round, tiny_model_dir, tmp_path):
    result = _ares("train", "prm", "--model", tiny_model_dir, "--epochs", "2", "--batch-size", "2",
                   "--report-to", "trackio", env={"TRACKIO_DIR": str(tmp_path / "trackio")})
    assert result.returncode == 0, result.stderr
    steps = _run(store, "prm").metrics["steps"]
    with sqlite3.connect(tmp_path / "trackio" / "huggingface.db") as db:
        logged = db.execute("SELECT run_name, step, metrics FROM metrics ORDER BY step").fetchall()
    logged = [(name, step, m["train/loss"]) for name, step, m in ((n, s, json.loads(m)) for n, s, m in logged)
              if "train/loss" in m]  # trackio also logs system metrics
    assert [(name, step) for name, step, _ in logged] == [("prm-1", s["step"]) for s in steps]
    assert [loss for _, _, loss in logged] == pytest.approx([s["loss"] for s in steps])


def test_a_missing_tracker_is_one_line_before_any_training(cli, store, scored_round, tiny_model_dir, monkeypatch):
    import ares_train.tracking as tracking

    monkeypatch.setattr(tracking, "find_spec", lambda name: None)
    result = cli(*RL, "--model", tiny_model_dir, "--report-to", "trackio")
    assert result.exit_code == 1
    assert result.stderr.strip() == ("error: --report-to trackio needs trackio, which is not installed: "
                                     "pip install 'ares-toolkit[tracking]'")
    with store.session() as session:
        assert session.exec(select(TrainingRun)).first() is None


def test_the_gguf_conversion_bar_is_quiet_unless_verbose(capsys):
    """Loading a GGUF student (`--model smollm2`) draws this bar on every command; transformers'
    own switch does not reach it."""
    import transformers.modeling_gguf_pytorch_utils as gguf_loading

    from ares_train.progress import library_output

    def convert() -> str:
        list(gguf_loading.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."))
        return capsys.readouterr().err

    with library_output(verbose=False):
        assert convert() == ""
    with library_output(verbose=True):
        assert "Converting and de-quantizing" in convert()
    assert "Converting and de-quantizing" in convert()  # restored on the way out
