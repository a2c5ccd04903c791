"""The PPO trainer end to end on the toy task: it learns, counts dropped rows, saves a PEFT adapter."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from ares_train import ppo_toy  # noqa: E402
from ares_train.ppo_config import PPOConfig  # noqa: E402
from ares_train.ppo_trainer import SentenceRewardPPOTrainer  # noqa: E402

from ppo_support import FAST, make_trainer  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    return ppo_toy.toy_tokenizer()


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
    assert first["kl"] == pytest.approx(0.0, abs=1e-6) and first["kl_k3"] == pytest.approx(0.0, abs=1e-6)
    assert first["mean_reward"] == pytest.approx(first["mean_score_reward"], abs=1e-6)
    second = trainer.step(ppo_toy.rollouts(trainer, 8))
    assert second["kl"] != pytest.approx(0.0, abs=1e-6)
    assert second["kl_k3"] > 1e-8  # an estimate of KL(policy || reference): positive once they differ


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
    assert trainer.encoder.prompt_inputs(prompt, None)[0] == tokenizer(prompt, add_special_tokens=False).input_ids


def test_config_refuses_an_unknown_placement_and_an_oversized_mini_batch():
    from ares_data.errors import TrainingError

    with pytest.raises(TrainingError, match="reward_placement"):
        PPOConfig(reward_placement="middle")
    with pytest.raises(TrainingError, match="mini_batch_size"):
        PPOConfig(batch_size=2, mini_batch_size=4)
    assert PPOConfig(reward_placement="final").reward_placement == "final"


def test_attention_dropout_copied_into_the_layers_is_off_too(tokenizer):
    """Llama's attention layers copy `config.attention_dropout` when built: zeroing the config
    afterwards would leave a functional dropout of 0.3 on in train mode, and the first update's
    ratio would not start at 1."""
    model = ppo_toy.toy_model(tokenizer, attention_dropout=0.3)
    trainer = SentenceRewardPPOTrainer(PPOConfig(**{**FAST, "batch_size": 8, "mini_batch_size": 8, "ppo_epochs": 1}),
                                       model, tokenizer)
    assert {m.attention_dropout for m in trainer.model.modules() if hasattr(m, "attention_dropout")} == {0.0}
    assert trainer.step(ppo_toy.rollouts(trainer, 8))["first_ratio_deviation"] < 1e-5
    assert trainer.gradient_checkpointing is False  # auto: on only on a CUDA device


def test_sampling_warpers_the_log_probs_would_not_see_are_refused(tokenizer):
    from ares_data.errors import TrainingError

    trainer = make_trainer(tokenizer)
    for option in ({"top_p": 0.9}, {"min_p": 0.1}, {"typical_p": 0.5}):
        with pytest.raises(TrainingError, match=f"{next(iter(option))} would change the sampled distribution"):
            trainer.generate([ppo_toy.PROMPT], 4, **option)


def test_a_fresh_critic_starts_near_zero_without_weight_decay(tokenizer):
    """The value head's default init gave values of std ~1 against rewards of +-0.5; now its
    weights have std 1/(hidden+1) and no bias (OpenRLHF's), so on the same hidden states its
    values are a fraction of the default head's. AdamW's weight decay is 0 unless set."""
    trainer = make_trainer(tokenizer)
    rows = ppo_toy.rollouts(trainer, 8)
    batch = trainer.encoder.collate([trainer.encoder.encode(r) for r in rows])
    with torch.no_grad():
        values = trainer._values(batch)
        with trainer._adapter("critic"):
            states = trainer._hidden(batch)
        torch.manual_seed(0)
        default = torch.nn.Linear(states.shape[-1], 1)(states).squeeze(-1)
    assert trainer.value_head.bias.item() == 0.0
    assert trainer.value_head.weight.std().item() == pytest.approx(1 / (states.shape[-1] + 1), rel=0.3)
    assert values.abs().mean().item() < 0.5 * default.abs().mean().item()
    assert {g["weight_decay"] for g in trainer.optimizer.param_groups} == {0.0}
    assert trainer.policy_params and trainer.critic_params  # clipped separately, each to max_grad_norm
    metrics = trainer.step(rows)
    assert metrics["policy_grad_norm"] > 0 and metrics["critic_grad_norm"] > 0
