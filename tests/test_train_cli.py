"""One round through the CLI on a tiny random student: generate -> (scores) -> export rl ->
train rl -> (corrections) -> train sft, with the checkpoint chain and the run records."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from sqlmodel import select

from ares_data.tables import Export, ModelCheckpoint, Rationale, Sentence, TrainingRun
from ares_train.loading import load_checkpoint, load_student

pytestmark = pytest.mark.slow  # ~30 s: two trainings of a tiny model


def _lora_b_norm(adapter_dir: Path) -> float:
    weights = load_file(adapter_dir / "adapter_model.safetensors")
    b = [w for name, w in weights.items() if "lora_B" in name]
    assert b, "no LoRA B matrices in the adapter"
    return float(sum(w.abs().sum() for w in b))


def _sentence_counts(store) -> dict[int, int]:
    with store.session() as session:
        rows = session.exec(select(Rationale).where(Rationale.source == "student").order_by(Rationale.id)).all()
        return {r.id: len(session.exec(select(Sentence).where(Sentence.rationale_id == r.id)).all()) for r in rows}


def _run(store, kind: str) -> TrainingRun:
    with store.session() as session:
        return session.exec(select(TrainingRun).where(TrainingRun.kind == kind)).one()


def test_one_round_through_the_cli(cli, store, feedback, tiny_model_dir, tmp_path):
    for n in range(3):
        feedback.question(n, answer=n % 2)
    model = str(tiny_model_dir)
    result = cli("generate", "--model", model, "--round", "1", "--k", "2", "--max-new-tokens", "12", "--seed", "0")
    assert result.exit_code == 0, result.output

    # The teacher's work, written as the collectors would: all scored but one with a wrong count and one never.
    counts = _sentence_counts(store)
    ids = list(counts)
    with store.session() as session:
        rollouts = {r.id: r for r in session.exec(select(Rationale))}
    for rid in ids[:-2]:
        feedback.score(rollouts[rid], [0.9] * counts[rid])
    feedback.score(rollouts[ids[-2]], [0.9] * max(counts[ids[-2]] - 1, 0))
    kept = sum(1 for rid in ids[:-2] if counts[rid])

    shard = tmp_path / "rl-shard"
    result = cli("export", "rl", "--round", "1", "--out", shard)
    assert result.exit_code == 0, result.output
    manifest = json.loads((shard / "manifest.json").read_text())
    assert manifest["row_count"] == kept
    assert manifest["skipped"] == {"unscored": 1, "score_count_mismatch": 1 + (len(ids) - 2 - kept)}

    result = cli("train", "rl", "--round", "1", "--model", model, "--shard", shard, "--batch-size", "2",
                 "--epochs", "1", "--lr", "1e-2", "--verbose")
    assert result.exit_code == 0, result.output
    assert "round-1-rl: metrics per step" in result.stdout  # --verbose: the per-step table
    assert "registered round-1-rl" in result.stdout
    with store.session() as session:
        checkpoints = {c.name: c for c in session.exec(select(ModelCheckpoint))}
    base, rl = checkpoints[tiny_model_dir.name], checkpoints["round-1-rl"]
    assert (rl.stage, rl.round, rl.parent_id) == ("rl", 1, base.id)  # started from the rollouts' checkpoint
    rl_dir = Path(rl.adapter_path)
    assert _lora_b_norm(rl_dir) > 0  # LoRA B starts at zero: training moved it
    run = _run(store, "rl")
    assert run.status == "done" and run.output_checkpoint_id == rl.id and run.input_checkpoint_id == base.id
    assert run.config["ppo_epochs"] == 1 and run.config["batch_size"] == 2
    assert (run.config["device"], run.config["dtype"]) == ("cpu", "float32")  # auto, resolved on a CPU machine
    # PPO trained on the stored ids, and its first forward reproduced the sampler's log-probs
    assert run.metrics["rollout_probs_diff_max"] < 1e-3 and run.metrics["summary"]["rows_retokenised"] == 0
    assert run.metrics["summary"]["critic_from"] is None  # round 1: a fresh critic
    with store.session() as session:
        assert session.get(Export, run.export_id).path == str(shard.resolve())
    steps = [json.loads(line) for line in (rl_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == len(run.metrics["steps"]) == run.metrics["summary"]["steps"] >= 1
    assert {"mean_reward", "kl", "policy_loss"} <= set(steps[0])

    for rid in ids[:2]:
        feedback.correct(rollouts[rid], "Zero is even." if rid == ids[0] else "One is odd. The answer is (B).")
    result = cli("train", "sft", "--round", "1", "--model", model, "--epochs", "2", "--lr", "1e-2")
    assert result.exit_code == 0, result.output
    with store.session() as session:
        sft = session.exec(select(ModelCheckpoint).where(ModelCheckpoint.name == "round-1-sft")).one()
        sft_export = session.exec(select(Export).where(Export.kind == "sft")).one()
    assert (sft.stage, sft.parent_id) == ("sft", rl.id)  # round-1-rl wins over --model
    assert sft_export.row_count == 2
    run = _run(store, "sft")
    assert run.status == "done" and run.export_id == sft_export.id and run.metrics["summary"]["rows"] == 2
    assert _lora_b_norm(Path(sft.adapter_path)) > 0

    # Loading round-1-sft merges base -> rl -> sft: its outputs differ from the base model's.
    chained, tokenizer, row = load_checkpoint(store, "round-1-sft")
    plain, _ = load_student(model)
    ids_in = tokenizer("Is two even?", return_tensors="pt").input_ids
    with torch.no_grad():
        assert not torch.allclose(chained(ids_in).logits, plain(ids_in).logits)
    assert row.id == sft.id

    again = cli("train", "sft", "--round", "1", "--model", model)
    assert again.exit_code == 1 and "round-1-sft already exists" in again.stderr


def test_a_failed_stage_is_recorded(cli, store, feedback, tiny_model_dir, tmp_path):
    rollout = feedback.rollout(feedback.question(1), "One is odd. The answer is (B).")
    feedback.correct(rollout, "One is odd. The answer is (B).")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    result = cli("train", "sft", "--round", "1", "--model", tiny_model_dir, "--output", blocker)
    assert result.exit_code == 1 and "sft training of round 1 failed" in result.stderr
    run = _run(store, "sft")
    assert run.status == "failed" and run.finished_at is not None and "FileExistsError" in run.error
    with store.session() as session:
        assert session.exec(select(ModelCheckpoint).where(ModelCheckpoint.stage == "sft")).first() is None


def test_bfloat16_on_cpu_end_to_end(cli, store, feedback, tiny_model_dir):
    """--dtype bfloat16 through generate, train rl and train sft; each stage records it."""
    for n in range(2):
        feedback.question(n, answer=n % 2)
    model = str(tiny_model_dir)
    result = cli("generate", "--model", model, "--round", "1", "--k", "2", "--max-new-tokens", "10", "--seed", "0",
                 "--device", "cpu", "--dtype", "bfloat16")
    assert result.exit_code == 0, result.output
    counts = _sentence_counts(store)
    with store.session() as session:
        rollouts = session.exec(select(Rationale).where(Rationale.source == "student")).all()
    assert {(r.generation["device"], r.generation["dtype"]) for r in rollouts} == {("cpu", "bfloat16")}
    for r in rollouts:
        feedback.score(r, [0.8] * counts[r.id])
        feedback.correct(r, "Zero is even. The answer is (A).")
    result = cli("train", "rl", "--round", "1", "--model", model, "--batch-size", "2", "--epochs", "1",
                 "--dtype", "bfloat16", "--gradient-checkpointing", "on")
    assert result.exit_code == 0, result.output
    rl = _run(store, "rl")
    assert (rl.config["device"], rl.config["dtype"], rl.config["gradient_checkpointing"]) == ("cpu", "bfloat16", True)
    assert 0 <= rl.metrics["rollout_probs_diff_mean"] <= rl.metrics["rollout_probs_diff_max"] < 0.1
    result = cli("train", "sft", "--round", "1", "--epochs", "1", "--dtype", "bfloat16", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    sft = _run(store, "sft")
    assert sft.status == "done" and (sft.config["device"], sft.config["dtype"]) == ("cpu", "bfloat16")
    assert _lora_b_norm(Path(_registered_path(store, "round-1-sft"))) > 0


def _registered_path(store, name: str) -> str:
    with store.session() as session:
        return session.exec(select(ModelCheckpoint).where(ModelCheckpoint.name == name)).one().adapter_path


def test_train_rl_with_grpo_stores_its_metrics_and_saves_no_critic(cli, store, feedback, tiny_model_dir):
    for n in range(2):
        feedback.question(n, answer=n % 2)
    model = str(tiny_model_dir)
    result = cli("generate", "--model", model, "--round", "1", "--k", "2", "--max-new-tokens", "16", "--seed", "0")
    assert result.exit_code == 0, result.output
    counts = _sentence_counts(store)
    with store.session() as session:
        rollouts = session.exec(select(Rationale).where(Rationale.source == "student")).all()
    assert all(counts[r.id] for r in rollouts)  # every rollout has a sentence: both groups are complete
    for i, r in enumerate(rollouts):  # one good, one bad rollout per question: nonzero GRPO advantages
        feedback.score(r, [0.9 if i % 2 else 0.1] * counts[r.id])
    result = cli("train", "rl", "--round", "1", "--model", model, "--advantage", "grpo", "--batch-size", "4",
                 "--epochs", "1", "--lr", "1e-2", "--loss-type", "grpo", "--scale-rewards", "none")
    assert result.exit_code == 0, result.output
    run = _run(store, "rl")
    assert (run.config["advantage"], run.config["loss_type"], run.config["scale_rewards"]) == ("grpo", "grpo", "none")
    assert run.status == "done" and run.metrics["summary"]["rows"] == 4
    assert run.metrics["summary"]["critic_from"] is None
    (step,) = run.metrics["steps"]  # both questions' rollouts in one batch
    assert step["rows"] == 4 and "value_loss" not in step and step["rollout_probs_diff_max"] < 1e-3
    rl_dir = Path(_registered_path(store, "round-1-rl"))
    assert _lora_b_norm(rl_dir) > 0
    assert not (rl_dir / "critic").exists() and not (rl_dir / "value_head.safetensors").exists()
