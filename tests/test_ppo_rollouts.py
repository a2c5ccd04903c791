"""PPO on what the sampler drew: stored ids and log-probs, a ratio that starts at 1 with the
default settings (dropout included), truncated rollouts, the critic carried over, checkpointing."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import load_file  # noqa: E402

from ares_data.splitter import split_sentences  # noqa: E402
from ares_train.loading import load_student  # noqa: E402
from ares_train.ppo_config import PPOConfig  # noqa: E402
from ares_train.ppo_trainer import CRITIC, VALUE_HEAD_FILE, SentenceRewardPPOTrainer  # noqa: E402
from ares_train.prompting import format_prompt  # noqa: E402
from ares_train.rollout_engines import HFEngine  # noqa: E402

QUESTIONS = ["Is 2 even?", "Which is bigger, 3 or a much larger number such as 40?"]


def _rollouts(tiny_model_dir, n=3, max_new_tokens=8, temperature=1.0, **kwargs):
    """(model, tokenizer, PPO rows) sampled from the tiny student with the HF engine."""
    model, tokenizer = load_student(str(tiny_model_dir))
    prompts = [format_prompt(tokenizer, q) for q in QUESTIONS]
    sampled = HFEngine(model, tokenizer).sample(prompts, [None] * len(prompts), n=n, max_new_tokens=max_new_tokens,
                                                temperature=temperature, seed=0, **kwargs)
    rows = []
    for prompt, group in zip(prompts, sampled):
        for one in group:
            ends = [s.end for s in split_sentences(one.text)]
            rows.append({"prompt": prompt, "response": one.text, "sentence_ends": ends, "scores": [0.9] * len(ends),
                         "temperature": temperature, **one.record()})
    return model, tokenizer, [r for r in rows if r["sentence_ends"]]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_first_forward_reproduces_the_behaviour_logprobs_with_dropout_on(tiny_model_dir, temperature):
    model, tokenizer, rows = _rollouts(tiny_model_dir, temperature=temperature)
    config = PPOConfig(batch_size=len(rows), mini_batch_size=2, ppo_epochs=1, learning_rate=1e-2)
    assert config.lora_dropout > 0  # the shipped default
    trainer = SentenceRewardPPOTrainer(config, model, tokenizer)
    metrics = trainer.step(rows)
    later = trainer.step(rows)  # LoRA B is no longer zero: dropout, were it on, would move the ratio
    assert later["first_ratio_deviation"] < 1e-3
    assert later["rollout_probs_diff_max"] < 1e-3  # the reference pass is still the sampler's model
    assert metrics["rows"] == len(rows) >= 4
    assert metrics["rollout_probs_diff_max"] < 1e-3
    assert 0 <= metrics["rollout_probs_diff_mean"] <= metrics["rollout_probs_diff_max"]
    assert trainer.rollout_probs_diff()["rollout_probs_diff_max"] == max(metrics["rollout_probs_diff_max"],
                                                                         later["rollout_probs_diff_max"])
    assert metrics["kl"] == pytest.approx(0.0, abs=1e-6)  # the policy is the reference before any update
    assert metrics["behaviour_weight_mean"] == pytest.approx(1.0, abs=1e-3)  # ... and the sampler
    assert later["behaviour_weight_mean"] != pytest.approx(1.0, abs=1e-3)  # the policy has moved since
    # the first update's forward (train mode, LoRA dropout configured) gives a ratio of 1
    assert metrics["first_ratio_deviation"] < 1e-3


def test_tokens_the_sampler_found_unlikely_weigh_up_to_the_cap(tiny_model_dir):
    """Rows whose sampler gave every token a quarter of the policy's probability: each token's
    policy-loss term counts twice (4, truncated at the cap), or once with the correction off.
    Advantages are not whitened: at ratio 1 the loss is -mean(w*A), and whitened A has mean 0."""
    import math

    model, tokenizer, rows = _rollouts(tiny_model_dir)
    unlikely = [{**r, "logprobs": [lp - math.log(4.0) for lp in r["logprobs"]]} for r in rows]
    one_update = dict(batch_size=len(rows), mini_batch_size=len(rows), ppo_epochs=1,
                      whiten_advantages=False)
    losses = {}
    for cap in (2.0, 0.0):
        trainer = SentenceRewardPPOTrainer(PPOConfig(behaviour_is_cap=cap, **one_update),
                                           load_student(str(tiny_model_dir))[0], tokenizer)
        metrics = trainer.step(unlikely)
        losses[cap] = metrics["policy_loss"]
        assert metrics["behaviour_weight_capped"] == (1.0 if cap else 0.0)
    assert metrics["behaviour_weight_mean"] == 1.0
    assert losses[2.0] == pytest.approx(2 * losses[0.0], rel=1e-4)
    assert abs(losses[0.0]) > 1e-3


def test_a_warped_sampler_shows_in_the_diff(tiny_model_dir):
    """top-k sampling is not the distribution PPO scores: the metric says so."""
    model, tokenizer, rows = _rollouts(tiny_model_dir, top_k=5)
    metrics = SentenceRewardPPOTrainer(PPOConfig(batch_size=len(rows), mini_batch_size=2, ppo_epochs=1),
                                       model, tokenizer).step(rows)
    assert metrics["rollout_probs_diff_max"] > 1e-2


def test_ppo_trains_on_the_stored_ids_and_a_cut_rollout_has_no_eos(tiny_model_dir):
    model, tokenizer, rows = _rollouts(tiny_model_dir, max_new_tokens=6)
    trainer = SentenceRewardPPOTrainer(PPOConfig(batch_size=2, mini_batch_size=1), model, tokenizer)
    eos = tokenizer.eos_token_id
    cut = next(r for r in rows if r["finish_reason"] == "length")
    sample = trainer.encoder.encode(cut)
    assert sample.response_ids == cut["token_ids"] and eos not in sample.response_ids and sample.truncated
    assert sample.behaviour == cut["logprobs"]
    stopped = {**cut, "token_ids": cut["token_ids"] + [eos], "logprobs": cut["logprobs"] + [-1.0],
               "finish_reason": "stop"}
    assert trainer.encoder.encode(stopped).response_ids[-1] == eos and not trainer.encoder.encode(stopped).truncated
    # a rollout stored before ids were kept: the documented fallback re-tokenises and appends EOS
    old = {k: v for k, v in cut.items() if k not in ("token_ids", "logprobs", "finish_reason")}
    fallback = trainer.encoder.encode(old)
    assert fallback.response_ids[-1] == eos and fallback.behaviour is None and not fallback.truncated
    # sentence ends land on the same tokens either way when the text round-trips
    assert trainer.encoder.encode(old).end_positions[-1] <= len(cut["token_ids"])


def test_the_critic_carries_over_to_the_next_run(tiny_model_dir, tmp_path):
    model, tokenizer, rows = _rollouts(tiny_model_dir)
    config = PPOConfig(batch_size=len(rows), mini_batch_size=len(rows), ppo_epochs=1, learning_rate=1e-2)
    first = SentenceRewardPPOTrainer(config, model, tokenizer)
    first.step(rows)
    out = first.save(tmp_path / "round-1-rl")
    fresh_model, _ = load_student(str(tiny_model_dir))
    second = SentenceRewardPPOTrainer(config, fresh_model, tokenizer, critic_from=out)
    torch.testing.assert_close(second.value_head.weight, first.value_head.weight)
    saved = load_file(out / VALUE_HEAD_FILE)
    torch.testing.assert_close(second.value_head.bias, saved["bias"])

    def critic_lora(trainer):
        return {n.replace(".critic", ""): p for n, p in trainer.model.named_parameters() if f".{CRITIC}." in n}

    carried, trained = critic_lora(second), critic_lora(first)
    assert carried and carried.keys() == trained.keys()
    assert any(p.abs().sum() > 0 for n, p in carried.items() if "lora_B" in n)  # not a fresh (zero) B
    for name, value in carried.items():
        torch.testing.assert_close(value, trained[name])
    # warm-up: the critic learns, the policy does not move
    warm = SentenceRewardPPOTrainer(PPOConfig(**{**config.__dict__, "critic_warmup_steps": 1}), load_student(
        str(tiny_model_dir))[0], tokenizer, critic_from=out)
    policy = {n: p.detach().clone() for n, p in warm.model.named_parameters() if ".default." in n}
    warm.step(rows)
    assert all(torch.equal(p, policy[n]) for n, p in warm.model.named_parameters() if ".default." in n)
    with pytest.raises(Exception, match="no critic to carry over"):
        SentenceRewardPPOTrainer(config, load_student(str(tiny_model_dir))[0], tokenizer, critic_from=tmp_path)


@pytest.mark.slow  # 112 s: among the longest of `make test` (pytest --durations, loaded 2-core machine)
def test_gradient_checkpointing_gives_the_same_update(tiny_model_dir):
    results = []
    for checkpointing in (False, True):
        model, tokenizer, rows = _rollouts(tiny_model_dir)
        config = PPOConfig(batch_size=len(rows), mini_batch_size=len(rows), ppo_epochs=2,
                           gradient_checkpointing=checkpointing, logits_chunk_tokens=3)
        results.append(SentenceRewardPPOTrainer(config, model, tokenizer).step(rows))
    for key in ("policy_loss", "value_loss", "rollout_probs_diff_max"):
        assert results[1][key] == pytest.approx(results[0][key], rel=1e-4, abs=1e-6)


@pytest.mark.slow  # among the longest of `make test` (--durations); CI runs it in `make test-slow`
def test_agreement_checks_fail_when_the_trainer_scores_another_distribution(peaked_model_dir):
    """On a student that samples likely tokens, each injected defect (scoring at another
    temperature, each token from the hidden state one position off, or another token id) breaks
    the `< 1e-3` agreement both in log space and in probability; the honest trainer passes both.
    (A constant shift of the position ids would not show: rotary embeddings are relative.)"""
    _, tokenizer, rows = _rollouts(peaked_model_dir, max_new_tokens=12)

    def agreement(rows, hidden=None, collate=None):
        config = PPOConfig(batch_size=len(rows), mini_batch_size=len(rows), ppo_epochs=1)
        trainer = SentenceRewardPPOTrainer(config, load_student(str(peaked_model_dir))[0], tokenizer)
        for owner, name, wrap in ((trainer, "_hidden", hidden), (trainer.encoder, "collate", collate)):
            if wrap is not None:
                setattr(owner, name, wrap(getattr(owner, name)))
        return trainer.step(rows)

    def shifted(hidden):  # token t scored from the state after it instead of the one before
        return lambda batch: torch.roll(hidden(batch), shifts=-1, dims=1)

    def wrong_id(collate):
        def inject(samples):
            batch = collate(samples)
            batch.response_ids[:, 0] = (batch.response_ids[:, 0] + 1) % len(tokenizer)
            return batch
        return inject

    honest = agreement(rows)
    assert honest["rows"] == len(rows) >= 4
    assert honest["rollout_logprob_diff_max"] < 1e-3 and honest["rollout_probs_diff_max"] < 1e-3
    for name, broken in (("temperature", agreement([{**r, "temperature": 0.85} for r in rows])),
                         ("position", agreement(rows, hidden=shifted)),
                         ("token id", agreement(rows, collate=wrong_id))):
        assert broken["rollout_logprob_diff_max"] > 1e-2, name
        assert broken["rollout_probs_diff_max"] > 1e-3, name


def test_a_stale_batch_is_reported_and_can_stop_the_run(tiny_model_dir, caplog):
    """Rows whose every token hits the importance cap (sampler p = policy p / 4): past
    max_capped_share, `warn` logs and flags each step, `stop` trains no further batch."""
    import math

    model, tokenizer, rows = _rollouts(tiny_model_dir)
    unlikely = [{**r, "logprobs": [lp - math.log(4.0) for lp in r["logprobs"]]} for r in rows]
    half = dict(batch_size=len(rows) // 2, mini_batch_size=len(rows) // 2, ppo_epochs=1)
    warned = SentenceRewardPPOTrainer(PPOConfig(**half), model, tokenizer).train(unlikely)
    assert len(warned) == 2 and all(m["stale"] and m["behaviour_weight_capped"] == 1.0 for m in warned)
    assert [m["stale_updates"] for m in warned] == [0, 1]  # the second batch was sampled one update ago
    assert "hit behaviour_is_cap" in caplog.text
    stopper = SentenceRewardPPOTrainer(PPOConfig(**half, on_stale="stop"), load_student(str(tiny_model_dir))[0],
                                       tokenizer)
    assert len(stopper.train(unlikely)) == 1 and stopper.stopped_stale == 1
    fine = SentenceRewardPPOTrainer(PPOConfig(**half, max_capped_share=1.0), load_student(str(tiny_model_dir))[0],
                                    tokenizer).train(unlikely)
    assert not any(m.get("stale") for m in fine)
