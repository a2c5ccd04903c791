"""`ares model materialize`: a model becomes a plain Hugging Face directory with the same weights."""

import pytest
import torch


@pytest.mark.slow  # among the longest of `make test` (--durations); CI runs it in `make test-slow`
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


def write_tiny_gguf(path):
    """A random 2-layer Llama (hidden size 32) as an F32 GGUF with a byte-level BPE vocabulary of
    260 tokens: what llama.cpp's converter writes, small enough to build and load in a second."""
    import gguf
    import numpy as np

    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = iter(range(256, 512))  # GPT-2's byte-level alphabet: every byte as a printable character
    alphabet = [chr(b) if b in printable else chr(next(shifted)) for b in range(256)]
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *alphabet, "Ġt"]
    hidden, ffn, heads, kv_heads, layers = 32, 64, 4, 2, 2
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(layers)
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL] * 3 + [gguf.TokenType.NORMAL] * 257)
    writer.add_token_merges(["Ġ t"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    rng = np.random.default_rng(0)
    head_dim = hidden // heads
    shapes = {"token_embd.weight": (len(tokens), hidden), "output_norm.weight": (hidden,),
              "output.weight": (len(tokens), hidden)}
    for i in range(layers):
        shapes.update({f"blk.{i}.attn_norm.weight": (hidden,), f"blk.{i}.ffn_norm.weight": (hidden,),
                       f"blk.{i}.attn_q.weight": (hidden, hidden), f"blk.{i}.attn_output.weight": (hidden, hidden),
                       f"blk.{i}.attn_k.weight": (kv_heads * head_dim, hidden),
                       f"blk.{i}.attn_v.weight": (kv_heads * head_dim, hidden),
                       f"blk.{i}.ffn_gate.weight": (ffn, hidden), f"blk.{i}.ffn_up.weight": (ffn, hidden),
                       f"blk.{i}.ffn_down.weight": (hidden, ffn)})
    for name, shape in shapes.items():
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_gguf_is_converted_once_and_reused_keyed_by_its_hash(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from ares_train.loading import load_student

    monkeypatch.setenv("ARES_HOME", str(tmp_path / "home"))
    gguf_file = write_tiny_gguf(tmp_path / "tiny.gguf")
    ids = torch.tensor([[1, 5, 9, 42]])
    first, _ = load_student(str(gguf_file))
    (cached,) = (tmp_path / "home" / "models").iterdir()
    assert cached.name.startswith("tiny-") and (cached / "config.json").is_file()
    stamp = {p.name: p.stat().st_mtime_ns for p in cached.iterdir()}
    direct = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf")(ids).logits
    again, tokenizer = load_student(str(gguf_file))  # from the directory: nothing written again
    assert {p.name: p.stat().st_mtime_ns for p in cached.iterdir()} == stamp
    assert torch.allclose(first(ids).logits, direct) and torch.allclose(again(ids).logits, direct)
    assert tokenizer.convert_ids_to_tokens([1]) == ["<|im_start|>"]
    write_tiny_gguf(gguf_file.with_name("other.gguf"))
    (tmp_path / "tiny.gguf").write_bytes((tmp_path / "other.gguf").read_bytes()[:-4] + b"\0\0\0\1")  # new bytes
    load_student(str(gguf_file))
    assert len(list((tmp_path / "home" / "models").iterdir())) == 2  # a changed file is converted afresh


def test_materializing_a_gguf_copies_the_converted_directory(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("ARES_HOME", str(tmp_path / "home"))
    gguf_file = write_tiny_gguf(tmp_path / "tiny.gguf")
    result = cli("model", "materialize", gguf_file, "--out", tmp_path / "hf")
    assert result.exit_code == 0, result.output
    (cached,) = (tmp_path / "home" / "models").iterdir()
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == sorted(p.name for p in cached.iterdir())
    assert (tmp_path / "hf" / "model.safetensors").read_bytes() == (cached / "model.safetensors").read_bytes()
