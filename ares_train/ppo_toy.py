"""A synthetic task small enough to watch PPO learn on a CPU in seconds.

Shared by the learning test and `benchmarks/credit_assignment.py`. The student is a tiny
random Llama over a word-level vocabulary; it writes a few "sentences" of words ended by `.`.
The scorer gives a sentence 1.0 when it contains the word `yes` and 0.0 otherwise, so the
mean sentence score rises only if the policy learns to put `yes` in its sentences.
"""

from __future__ import annotations

from typing import Any, Iterator

from ares_data.splitter import split_sentences

WORDS = ["yes", "no", "maybe", "so", "then", "."]
SPECIALS = ["<pad>", "<bos>", "<eos>"]
PROMPT = "<bos> so"
TARGET_WORD = "yes"


def toy_tokenizer() -> Any:
    """A fast word-level tokenizer (with offsets) over `WORDS`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>"
    )


def toy_model(tokenizer: Any, seed: int = 0) -> Any:
    """A 2-layer Llama with hidden size 32, randomly initialised from `seed`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def score(response: str) -> tuple[list[int], list[float]]:
    """Sentence end offsets and scores: 1.0 for a sentence containing `yes`, else 0.0."""
    spans = split_sentences(response)
    return [s.end for s in spans], [float(TARGET_WORD in s.text.split()) for s in spans]


def rollouts(trainer: Any, n: int, max_new_tokens: int = 12) -> list[dict]:
    """`n` sampled responses to the fixed prompt, scored: rows for `trainer.step`."""
    responses = trainer.generate(
        [PROMPT] * n, max_new_tokens, do_sample=True, min_new_tokens=max_new_tokens,
    )
    rows = []
    for response in responses:
        ends, scores = score(response)
        rows.append({"prompt": PROMPT, "response": response, "sentence_ends": ends, "scores": scores})
    return rows


def online(trainer: Any, steps: int, max_new_tokens: int = 12) -> Iterator[dict]:
    """generate -> score -> PPO step, `steps` times; yields each step's metrics."""
    for _ in range(steps):
        yield trainer.step(rollouts(trainer, trainer.config.batch_size, max_new_tokens))
