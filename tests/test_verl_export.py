"""`ares export verl`: verl's train/val parquet and run_verl.sh, composed by verl's own Hydra config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from datasets import load_dataset
from omegaconf import OmegaConf
from verl.trainer.ppo.reward import resolve_reward_manager_cls
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from verl.utils.config import validate_config

from ares_data.enums import LabelKind, LabelOrigin
from ares_data.errors import ExportError
from ares_data.exporters import export_prm, export_rl, export_sft, read_shard
from ares_data.verl_export import export_verl, verl_script
from ares_data.tables import HumanLabel
from ares_train.ppo_config import PPOConfig
from ares_train.verl_agent import check_config
from ares_train.verl_reward import AresSentenceRewardLoop, VerlRewardSettings


def _rows(path: Path) -> list[dict]:
    return load_dataset("parquet", data_files=str(path), split="train").to_list()


@pytest.mark.slow  # 105 s: among the longest of `make test` (pytest --durations, loaded 2-core machine)
def test_export_writes_verls_dataset_and_a_script_verl_composes(cli, feedback, store, db_url, tmp_path,
                                                               tiny_model_dir):
    train = [feedback.question(n) for n in (2, 3, 4)]
    val = feedback.question(5, answer=1, split="val")
    flagged = feedback.question(7)
    with store.session() as session:  # a picture question stays out: verl's path here is text only
        store.add_question(session, dataset="toy", source_id="pic", split="train", question="Which?",
                           choices=["a", "b"], image_path="img.png")
        session.add(HumanLabel(kind=LabelKind.flag, question_id=flagged.id, new_text="bad", reviewer="me",
                               origin=LabelOrigin.review))
    result = cli("export", "verl", "--round", "2", "--out", tmp_path / "verl", "--model", tiny_model_dir)
    assert result.exit_code == 0, result.output
    out = tmp_path / "verl"
    rows, val_rows = _rows(out / "train.parquet"), _rows(out / "val.parquet")
    assert [r["extra_info"]["question_id"] for r in rows] == [q.id for q in train]
    assert [r["extra_info"]["question_id"] for r in val_rows] == [val.id]
    assert rows[0]["prompt"] == [{"role": "user", "content": rows[0]["prompt"][0]["content"]}]
    assert rows[0]["prompt"][0]["content"].startswith("Question: Is 2 even?")
    assert val_rows[0]["reward_model"] == {"style": "rule", "ground_truth": "B"}
    assert "skipped: 1 flagged_bad, 1 image_question" in result.stdout

    # No PYTHON: the script runs the interpreter that exported it (this one, with verl).
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHON"}, "ARES_DB": db_url}
    assert f'"${{PYTHON:-{sys.executable}}}" -m ares_train.verl_main' in (out / "run_verl.sh").read_text()
    # Hydra's own flags come after the overrides. vLLM is not installed here: its LoRA check is
    # the one part of verl's validation that needs it, so the composed config names SGLang instead.
    job = subprocess.run(["bash", str(out / "run_verl.sh"), "trainer.total_epochs=3",
                          "actor_rollout_ref.rollout.name=sglang", "--cfg", "job"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert job.returncode == 0, job.stderr[-3000:]
    cfg = OmegaConf.create(job.stdout)
    model, method = str(tiny_model_dir), PPOConfig()
    assert cfg.trainer.use_v1 is True and cfg.actor_rollout_ref.rollout.agent.default_agent_loop == "ares_single_turn"
    assert cfg.actor_rollout_ref.rollout.agent.agent_loop_config_path == str(out / "agent_loops.yaml")
    check_config(cfg)  # the agent loop file names ares_train's class
    assert cfg.algorithm.adv_estimator == "gae" and cfg.critic.model.path == model
    # The offline PPO's method (ares_train/ppo_config.py), not verl's defaults.
    assert (cfg.algorithm.gamma, cfg.algorithm.lam, cfg.algorithm.kl_ctrl.kl_coef) == (
        method.gamma, method.lam, method.kl_coef)
    actor = cfg.actor_rollout_ref.actor
    assert actor.clip_ratio == actor.clip_ratio_low == actor.clip_ratio_high == method.clip_range
    assert cfg.critic.cliprange_value == method.value_clip_range
    for lora in (cfg.actor_rollout_ref.model, cfg.critic.model):  # the critic is LoRA too
        assert (lora.lora_rank, lora.lora_alpha, lora.target_modules) == (
            method.lora_r, method.lora_alpha, method.lora_target_modules)
    assert cfg.actor_rollout_ref.model.path == model
    assert cfg.data.train_files == str(out / "train.parquet") and cfg.data.val_files == str(out / "val.parquet")
    assert cfg.trainer.total_epochs == 3  # an extra argument passed through
    assert resolve_reward_manager_cls(cfg) is AresSentenceRewardLoop  # what verl's reward workers load
    settings = VerlRewardSettings.from_verl(cfg)
    assert (settings.run, settings.round, settings.base_model, settings.neutral, settings.train_split) == (
        "ares-round-2", 2, model, method.neutral_score, "train")
    OmegaConf.resolve(cfg)
    assert need_critic(cfg) and need_reference_policy(cfg)  # GAE's critic; the KL-in-reward reference
    validate_config(cfg, use_reference_policy=True, use_critic=True)  # raises on an inconsistent config

    # ARES_ADVANTAGE=grpo: critic-free sentence GRPO with the KL in the loss, at the offline coefficient
    grpo = subprocess.run(["bash", str(out / "run_verl.sh"), "actor_rollout_ref.rollout.name=sglang", "--cfg", "job"],
                          capture_output=True, text=True, env={**env, "ARES_ADVANTAGE": "grpo"}, timeout=300)
    assert grpo.returncode == 0, grpo.stderr[-3000:]
    cfg = OmegaConf.create(grpo.stdout)
    check_config(cfg)
    assert (cfg.algorithm.adv_estimator, cfg.algorithm.use_kl_in_reward) == ("ares_sentence_grpo", False)
    assert cfg.actor_rollout_ref.actor.use_kl_loss and cfg.actor_rollout_ref.actor.kl_loss_coef == method.kl_coef
    OmegaConf.resolve(cfg)
    assert not need_critic(cfg)



def test_a_store_url_with_a_password_is_not_written(tmp_path):
    script = verl_script(SimpleNamespace(url="postgresql://ares:s3cret@db.internal/ares"), 1, "m", "run")
    assert "s3cret" not in script and "ARES_DB:?" in script


def test_no_questions_to_validate_on_is_refused(feedback, store, tmp_path):
    feedback.question(2)
    with pytest.raises(ExportError, match="'val' or 'test' questions"):
        export_verl(store, 1, out_dir=tmp_path)


def test_held_out_rationales_stay_out_of_every_training_shard(feedback, store, tmp_path):
    """verl's validation records its val/test answers as round-N rationales: no training export takes them."""
    for n, split in ((2, "train"), (3, "val"), (4, "test")):
        rollout = feedback.rollout(feedback.question(n, split=split), f"{n} is a number. The answer is (A).", round=2)
        feedback.score(rollout, [0.8, 0.9])
        feedback.correct(rollout, f"{n} is whole. The answer is (A).")
    rl = export_rl(store, 2, out_dir=tmp_path / "rl")
    sft = export_sft(store, 2, out_dir=tmp_path / "sft", scores="teacher")
    prm = export_prm(store, out_dir=tmp_path / "prm", sources=("student",))
    for export in (rl, sft, prm):
        rows = read_shard(export.path)
        assert len(rows) == 1 and "Is 2 even?" in str(rows[0]), export.kind
        assert export.skipped["held_out_split"] == 2, export.kind
