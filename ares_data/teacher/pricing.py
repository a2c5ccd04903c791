"""Token estimates and prices: enough to say what a run will cost before it is sent.

Cached input is priced apart: tokens a provider read from its prompt cache cost a fraction of
the input price (OpenAI 25-50 %, Anthropic 10 %), and Anthropic charges 125 % for the tokens it
writes to the cache. Both counts are part of `tokens_in`, which counts every input token.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, NamedTuple


class Rates(NamedTuple):
    """USD per million tokens."""

    input: float
    output: float
    cached: float  # input read from the provider's prompt cache
    cache_write: float  # input written to the cache (Anthropic); OpenAI charges the input price


def _openai(input: float, output: float, cached: float) -> Rates:
    return Rates(input, output, cached, input)


def _anthropic(input: float, output: float) -> Rates:
    return Rates(input, output, round(input * 0.1, 4), round(input * 1.25, 4))


# List prices of common teachers; --price-in/out override the input and output rates.
PRICES: dict[str, Rates] = {
    "gpt-4o": _openai(2.50, 10.00, 1.25),
    "gpt-4o-mini": _openai(0.15, 0.60, 0.075),
    "gpt-4.1": _openai(2.00, 8.00, 0.50),
    "gpt-4.1-mini": _openai(0.40, 1.60, 0.10),
    "gpt-4.1-nano": _openai(0.10, 0.40, 0.025),
    "o4-mini": _openai(1.10, 4.40, 0.275),
    "claude-3-5-haiku": _anthropic(0.80, 4.00),
    "claude-3-5-sonnet": _anthropic(3.00, 15.00),
    "claude-sonnet-4": _anthropic(3.00, 15.00),
    "claude-opus-4": _anthropic(15.00, 75.00),
}
BATCH_DISCOUNT = 0.5  # OpenAI Batch API: half the price of every token, in and out
CHARS_PER_TOKEN = 4
IMAGE_TOKENS = 800  # a rough figure for one image part
CACHE_MIN_TOKENS = 1024  # OpenAI and Anthropic cache only prefixes at least this long


def rates(model: str, price_in: float | None = None, price_out: float | None = None) -> Rates:
    """The longest table entry the model name starts with (else all 0), with the overrides applied.
    An overridden input price keeps the table's cached/input ratios (none: no discount)."""
    match = max((name for name in PRICES if model.startswith(name)), key=len, default=None)
    table = PRICES[match] if match else Rates(0.0, 0.0, 0.0, 0.0)
    if price_in is None:
        return table if price_out is None else table._replace(output=price_out)
    ratio = (table.cached / table.input, table.cache_write / table.input) if table.input else (1.0, 1.0)
    return Rates(price_in, table.output if price_out is None else price_out, price_in * ratio[0], price_in * ratio[1])


def price(model: str, price_in: float | None = None, price_out: float | None = None) -> tuple[float, float]:
    """Per-million (input, output) prices."""
    found = rates(model, price_in, price_out)
    return found.input, found.output


def cost(model: str, tokens_in: int, tokens_out: int, price_in: float | None = None,
         price_out: float | None = None, cached_in: int = 0, cache_write_in: int = 0) -> float:
    """USD for one call; `cached_in` and `cache_write_in` are the parts of `tokens_in` read from and
    written to the provider's cache."""
    r = rates(model, price_in, price_out)
    fresh = max(0, tokens_in - cached_in - cache_write_in)
    return (fresh * r.input + cached_in * r.cached + cache_write_in * r.cache_write + tokens_out * r.output) / 1e6


def estimate_tokens(body: dict[str, Any]) -> int:
    """Input tokens of a request body from the length of all it sends (chars / 4: the messages,
    the system prompt and the answer's schema, which providers count too) plus a flat cost per
    image. Counting the messages alone fell short of the usage billed, so --max-cost could be
    passed by the call that its estimate let through."""
    text = json.dumps(body, ensure_ascii=False)
    images = text.count('"image_url"') + text.count('"type": "image"')
    return len(text) // CHARS_PER_TOKEN + images * IMAGE_TOKENS


CACHE_CHUNK_TOKENS = 128  # OpenAI caches prompt prefixes in 128-token increments


def prompt_text(body: dict[str, Any]) -> str:
    """A request's prompt as one string, in order: system, then every message's content."""
    pieces = [str(body["system"])] if body.get("system") else []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            content = "\n".join(p.get("text") or json.dumps(p, sort_keys=True) for p in content)
        pieces.append(str(content))
    return "\n".join(pieces)


def _segments(body: dict[str, Any]) -> list[str]:
    """The prompt cut into cache-sized chunks: a provider's cache serves whole chunks of a prefix."""
    text, size = prompt_text(body), CACHE_CHUNK_TOKENS * CHARS_PER_TOKEN
    return [text[i:i + size] for i in range(0, len(text) - size + 1, size)]


class PrefixCache:
    """Which input tokens a provider's prompt cache would serve: the longest prefix of whole
    128-token chunks already sent in an earlier request, when at least `min_tokens` long (the
    text is the same whether a message is a string or a list of text parts). Used for --dry-run
    estimates and by the fake teacher."""

    def __init__(self, min_tokens: int = CACHE_MIN_TOKENS):
        self.min_tokens = min_tokens
        self._seen: set[bytes] = set()

    def read(self, body: dict[str, Any]) -> int:
        """Cached tokens of this request; remembers its prefixes for the requests after it."""
        hit, length, digest = 0, 0, hashlib.sha256()
        for piece in _segments(body):
            digest.update(piece.encode())
            length += len(piece)
            key = digest.digest()
            if key in self._seen:
                hit = length
            self._seen.add(key)
        tokens = hit // CHARS_PER_TOKEN
        return tokens if tokens >= self.min_tokens else 0
