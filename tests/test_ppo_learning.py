"""The PPO trainer end to end on the toy task: it learns, counts dropped rows, saves a PEFT adapter."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from ares_train import ppo_toy  # noqa: E402
from ares_train.ppo_config import PPOConfig  # noqa: E402
from ares_train.ppo_trainer import SentenceRewardPPOTrainer  # noqa: E402

FAST = dict(learning_rate=5e-3, batch_size=16, mini_batch_size=8, lora_dropout=0.0, seed=0)


@pytest.fixture(scope="module")
def tokenizer():
    return ppo_toy.toy_tokenizer()


def make_trainer(tokenizer, **overrides):
    return SentenceRewardPPOTrainer(PPOConfig(**{**FAST, **overrides}), ppo_toy.toy_model(tokenizer), tokenizer)


@pytest.mark.slow  # ~8 s alone, 20-40 s on a busy 2-core machine
def test_mean_sentence_score_rises_over_online_ppo_updates(tokenizer):
    torch.manual_seed(0)
    metrics = list(ppo_toy.online(make_trainer(tokenizer), steps=30))
    first = sum(m["mean_score"] for m in metrics[:5]) / 5
    last = sum(m["mean_score"] for m in metrics[-5:]) / 5
    assert first < 0.6
    assert last > first + 0.25, [round(m["mean_score"], 2) for m in metrics]


def test_reference_is_the_policy_before_the_first_update(tokenizer):
    trainer = make_trainer(tokenizer)
    first = trainer.step(ppo_toy.rollouts(trainer, 8))
    assert first["kl"] == pytest.approx(0.0, abs=1e-6)
    assert first["mean_reward"] == pytest.approx(first["mean_score_reward"], abs=1e-6)
    second = trainer.step(ppo_toy.rollouts(trainer, 8))
    assert second["kl"] != pytest.approx(0.0, abs=1e-6)


def test_train_drops_mismatched_rows_and_appends_metrics(tokenizer, tmp_path):
    trainer = make_trainer(tokenizer, batch_size=4, mini_batch_size=2, ppo_epochs=1)
    rows = ppo_toy.rollouts(trainer, 7)
    rows[2] = {**rows[2], "scores": rows[2]["scores"][:-1]}
    path = tmp_path / "metrics.jsonl"
    metrics = trainer.train(rows, metrics_path=path)
    assert [m["rows"] for m in metrics] == [4, 2]
    assert sum(m["dropped"] for m in metrics) == 1
    assert [json.loads(line) for line in path.read_text().splitlines()] == metrics
    for key in ("step", "mean_reward", "mean_score_reward", "kl", "policy_loss", "value_loss",
                "clip_frac", "entropy"):
        assert all(key in m for m in metrics)


@pytest.mark.slow  # 100 s: among the longest of `make test` (pytest --durations, loaded 2-core machine)
def test_saved_policy_loads_with_peft_and_has_moved_from_init(tokenizer, tmp_path):
    from peft import PeftModel

    trainer = make_trainer(tokenizer)
    for _ in ppo_toy.online(trainer, steps=2):
        pass
    out = trainer.save(tmp_path / "rl")
    assert (out / "critic" / "adapter_config.json").is_file()
    assert (out / "value_head.safetensors").is_file()

    base = ppo_toy.toy_model(tokenizer)
    ids = tokenizer(ppo_toy.PROMPT + " red so green", return_tensors="pt").input_ids
    with torch.no_grad():
        base_logits = base(ids).logits
        loaded = PeftModel.from_pretrained(base, out).eval()
        loaded_logits = loaded(ids).logits
        trainer.model.eval()
        trained_logits = trainer.model(ids).logits
    lora_b = [p for n, p in loaded.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # B starts at zero
    assert not torch.allclose(loaded_logits, base_logits)
    torch.testing.assert_close(loaded_logits, trained_logits)


def test_one_step_on_chat_formatted_prompts_with_the_smollm2_tokenizer(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ares_data.splitter import split_sentences
    from ares_train.prompting import format_prompt

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompt = format_prompt(tokenizer, "Which is hotter, 90°F or 85°F?")
    responses = ["The 90°F pie is hotter. So it has more thermal energy.", "It is 85°F. The answer is (B)."]
    rows = [{"prompt": prompt, "response": r, "sentence_ends": [s.end for s in split_sentences(r)],
             "scores": [1.0, 0.0]} for r in responses]
    trainer = SentenceRewardPPOTrainer(PPOConfig(batch_size=2, mini_batch_size=1, ppo_epochs=1), model, tokenizer)
    (metrics,) = trainer.train(rows)
    assert metrics["rows"] == 2 and metrics["dropped"] == 0
    assert metrics["mean_score_reward"] == pytest.approx(0.0)  # +0.5 and -0.5 in each response
    assert metrics["kl"] == pytest.approx(0.0, abs=1e-5)
    # the template already holds its special tokens: none is added twice
    assert trainer._prompt_inputs(prompt, None)[0] == tokenizer(prompt, add_special_tokens=False).input_ids


def test_config_refuses_an_unknown_placement_and_an_oversized_mini_batch():
    from ares_data.errors import TrainingError

    with pytest.raises(TrainingError, match="reward_placement"):
        PPOConfig(reward_placement="middle")
    with pytest.raises(TrainingError, match="mini_batch_size"):
        PPOConfig(batch_size=2, mini_batch_size=4)
    assert PPOConfig(reward_placement="final").reward_placement == "final"
