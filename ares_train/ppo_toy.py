"""A synthetic task small enough to watch PPO learn on a CPU in seconds.

Shared by the learning test and `benchmarks/credit_assignment.py`. The student is a tiny
random Llama over a word-level vocabulary; it writes `SENTENCES` "sentences" of
`SENTENCE_WORDS` words each (the toy's sentence boundaries are fixed, not punctuated).
Sentence i scores 1.0 when it contains the word `TARGETS[i]` and 0.0 otherwise: the policy has
to learn what to write where, which is what per-sentence credit helps with.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

TARGETS = ["red", "green", "blue", "gold"]
WORDS = TARGETS + ["so", "then", "and", "it"]
SPECIALS = ["<pad>", "<bos>", "<eos>"]
PROMPT = "<bos> so"
SENTENCES, SENTENCE_WORDS = 4, 3


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


def toy_model(tokenizer: Any, seed: int = 0, init_range: float = 0.2, **config: Any) -> Any:
    """A 2-layer Llama with hidden size 32, randomly initialised from `seed`; `config` overrides
    LlamaConfig fields (e.g. `attention_dropout`)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    llama = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False, initializer_range=init_range, **config,
    )  # fmt: skip
    return LlamaForCausalLM(llama)


def score(response: str) -> tuple[list[int], list[float]]:
    """Sentence end offsets and scores of a response (every `SENTENCE_WORDS` words a sentence)."""
    words = list(re.finditer(r"\S+", response))
    ends, scores = [], []
    for i in range(0, len(words), SENTENCE_WORDS):
        chunk = words[i : i + SENTENCE_WORDS]
        target = TARGETS[(i // SENTENCE_WORDS) % len(TARGETS)]
        ends.append(chunk[-1].end())
        scores.append(float(any(w.group() == target for w in chunk)))
    return ends, scores


def rollouts(trainer: Any, n: int) -> list[dict]:
    """`n` sampled responses to the fixed prompt, scored: rows for `trainer.step`."""
    tok, length = trainer.tokenizer, SENTENCES * SENTENCE_WORDS
    responses = trainer.generate(
        [PROMPT] * n, length, do_sample=True, min_new_tokens=length,
        suppress_tokens=[tok.pad_token_id, tok.bos_token_id],
    )
    rows = []
    for response in responses:
        ends, scores = score(response.text)
        rows.append({"prompt": PROMPT, "response": response.text, "sentence_ends": ends, "scores": scores,
                     "sampled_at": trainer.policy_updates, **response.record()})
    return rows


def online(trainer: Any, steps: int) -> Iterator[dict]:
    """generate -> score -> PPO step, `steps` times; yields each step's metrics."""
    for _ in range(steps):
        yield trainer.step(rollouts(trainer, trainer.config.batch_size))
