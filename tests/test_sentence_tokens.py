"""Sentence ends -> tokens, on real ScienceQA rationales with the real SmolLM2 tokenizer."""

from __future__ import annotations

import json

import pytest

from ares_data.splitter import split_sentences
from ares_train.sentence_tokens import sentence_end_tokens, sentence_ends_on_ids, tokenize_with_sentence_ends


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture
def solutions(sqa) -> list[str]:
    problems = json.loads(sqa["problems"].read_text())
    return [p["solution"] for p in problems.values() if p["solution"].strip()]


def test_offsets_with_special_tokens_and_uncovered_spaces():
    # a BOS with an empty span, then words whose spans leave the spaces uncovered
    offsets = [(0, 0), (0, 3), (4, 8), (8, 9), (10, 14)]
    assert sentence_end_tokens(offsets, [9, 14]) == [3, 4]
    assert sentence_end_tokens(offsets, [4]) == [1]  # ends on an uncovered space: the token before
    assert sentence_end_tokens(offsets, []) == []
    with pytest.raises(ValueError):
        sentence_end_tokens(offsets, [15])
    with pytest.raises(ValueError):
        sentence_end_tokens(offsets, [0])


def test_every_sentence_of_real_rationales_maps_to_the_token_holding_its_last_char(tokenizer, solutions):
    checked = 0
    for text in solutions:
        spans = split_sentences(text)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, positions = tokenize_with_sentence_ends(tokenizer, text, [s.end for s in spans])
        assert ids == enc["input_ids"]
        assert positions == sorted(positions)
        for span, pos in zip(spans, positions):
            start, end = enc["offset_mapping"][pos]
            assert start <= span.end - 1 < end, (text, span)
            # the sentence is complete after this token and not before it
            assert tokenizer.decode(ids[: pos + 1]).startswith(text[: span.end])
            assert not tokenizer.decode(ids[:pos]).startswith(text[: span.end])
            checked += 1
    assert checked > len(solutions) > 20  # several sentences per rationale, each checked


@pytest.mark.parametrize(
    "text, end, token",
    [
        # sentence spans that stop before a closing quote or bracket fused with the period
        ("It weighs 3.5m.\u201d Then it fell.", len("It weighs 3.5m."), ".\u201d"),
        ('He said "stop." Then he left.', len('He said "stop.'), '."'),
        ("Use 3.5m.) Then", len("Use 3.5m."), ".)"),
    ],
)
def test_a_sentence_ending_mid_token_maps_to_the_straddling_token(tokenizer, text, end, token):
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    _, (pos,) = tokenize_with_sentence_ends(tokenizer, text, [end])
    start, stop = enc["offset_mapping"][pos]
    assert tokenizer.decode(enc["input_ids"][pos]) == token
    assert start < end < stop  # the token straddles the boundary and holds the last character


def test_sentence_ends_on_sampled_ids_with_a_stripped_lead_and_multibyte_characters(tokenizer):
    """The ids as a sampler drew them (a leading space, 🔥 and 瀬 spread over byte tokens, EOS last):
    each sentence ends on the first token whose prefix decodes past its last character."""
    text = "The 90°F pie is hotter 🔥. So it has more thermal energy than 瀬戸 tea. The answer is (A)."
    ids = tokenizer(" " + text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    ends = [s.end for s in split_sentences(text)]
    positions = sentence_ends_on_ids(tokenizer, ids, text, ends)
    assert len(positions) == len(ends) >= 2 and positions[-1] == len(ids) - 2  # the final period, not the EOS
    for end, pos in zip(ends, positions):
        assert tokenizer.decode(ids[: pos + 1], skip_special_tokens=True).strip().startswith(text[:end])
        assert not tokenizer.decode(ids[:pos], skip_special_tokens=True).strip().startswith(text[:end])
    with pytest.raises(ValueError, match="not its token ids decoded"):
        sentence_ends_on_ids(tokenizer, ids, text + " More.", ends)
