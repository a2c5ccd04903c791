"""`ares model materialize`: a model becomes a plain Hugging Face directory with the same weights."""

import torch


def test_materialized_model_gives_the_same_logits(cli, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "hf"
    result = cli("model", "materialize", tiny_model_dir, "--out", out)
    assert result.exit_code == 0, result.output
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    assert not (tmp_path / "hf.partial").exists()
    ids = torch.tensor([[1, 5, 9, 42]])
    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(ids).logits
    after = AutoModelForCausalLM.from_pretrained(out)(ids).logits
    assert torch.allclose(before, after)
    again = cli("model", "materialize", tiny_model_dir, "--out", out)  # a finished directory is kept
    assert again.exit_code == 0


def test_materialize_unknown_model_is_one_line(cli, tmp_path):
    result = cli("model", "materialize", tmp_path / "nope", "--out", tmp_path / "hf")
    assert result.exit_code == 1
    assert "neither 'smollm2' nor a directory" in result.stderr
