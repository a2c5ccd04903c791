"""Where each sentence of a response ends, in tokens: the position that carries its reward.

Sentence scores are stored against character spans of the response text; PPO (ours and verl's)
needs them on tokens. A sentence's reward goes on the token that contains its last character,
found with the tokenizer's offsets (`return_offsets_mapping=True`). When a sentence ends
mid-token (`stop."` tokenised as `stop` + `."`), that straddling token gets the reward: it is the
first point where the whole sentence has been written.
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate
from typing import Any, Sequence


def sentence_end_tokens(offsets: Sequence[Sequence[int]], sentence_ends: Sequence[int]) -> list[int]:
    """Index of the token holding the last character (`end - 1`) of each sentence.

    `offsets` are (start, end) character spans, one per token; empty spans (special tokens)
    never hold a character. A character that no token covers (a gap some tokenizers leave for
    spaces) maps to the nearest token before it. Raises ValueError when a sentence ends before
    the first token or past the last one.
    """
    if not sentence_ends:
        return []
    kept = [(i, int(s), int(e)) for i, (s, e) in enumerate(offsets) if e > s]
    if not kept:
        raise ValueError("no token covers any character")
    starts = [s for _, s, _ in kept]
    last_char = kept[-1][2]
    positions = []
    for end in sentence_ends:
        char = end - 1
        k = bisect_right(starts, char) - 1
        if k < 0 or char >= last_char:
            raise ValueError(f"sentence end {end} lies outside the tokenised text (0..{last_char})")
        positions.append(kept[k][0])
    return positions


def tokenize_with_sentence_ends(
    tokenizer: Any, text: str, sentence_ends: Sequence[int]
) -> tuple[list[int], list[int]]:
    """Token ids of `text` (no special tokens) and the token index of each sentence end."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), sentence_end_tokens(enc["offset_mapping"], sentence_ends)


def decoded_spans(tokenizer: Any, ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """`decode(ids, skip_special_tokens=True)` and the (start, end) character span of each token
    in it; a special token covers nothing.

    The cheapest way that holds: the decoded text's own offsets, when encoding it again gives
    `ids` back (the usual case); else each token decoded alone, when the pieces concatenate to
    the text (a sampled, non-canonical split); else growing prefixes decoded (`_prefix_spans`),
    which holds for any tokenizer at a quadratic cost.
    """
    special = set(tokenizer.all_special_ids)
    text = tokenizer.decode(list(ids), skip_special_tokens=True)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if list(enc["input_ids"]) == [i for i in ids if i not in special]:
        offsets = iter(enc["offset_mapping"])
        return text, [(0, 0) if i in special else tuple(next(offsets)) for i in ids]
    pieces = tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=True)
    if "".join(pieces) != text:
        return text, _prefix_spans(tokenizer, ids)
    ends = list(accumulate(len(p) for p in pieces))
    return text, [(end - len(piece), end) for piece, end in zip(pieces, ends)]


def _prefix_spans(tokenizer: Any, ids: Sequence[int]) -> list[tuple[int, int]]:
    """Spans found by decoding growing prefixes: a token that stops inside a multi-byte character
    (its prefix decodes to U+FFFD) covers nothing; the character belongs to the token that
    completes it."""
    spans, done = [], 0
    for i in range(len(ids)):
        text = tokenizer.decode(ids[: i + 1], skip_special_tokens=True)
        end = done if text.endswith("\ufffd") else max(done, len(text))
        spans.append((done, end))
        done = end
    return spans


def sentence_ends_on_ids(tokenizer: Any, ids: Sequence[int], text: str, sentence_ends: Sequence[int]) -> list[int]:
    """Token index of each sentence end of `text`, the stored rationale: the sampled `ids`
    decoded without special tokens and stripped (the stripped lead shifts every span)."""
    decoded, spans = decoded_spans(tokenizer, ids)
    if decoded.strip() != text:
        raise ValueError("the response text is not its token ids decoded")
    lead = len(decoded) - len(decoded.lstrip())
    return sentence_end_tokens([(s - lead, e - lead) for s, e in spans], sentence_ends)
