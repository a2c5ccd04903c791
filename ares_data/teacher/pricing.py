"""Token estimates and prices: enough to say what a run will cost before it is sent."""

from __future__ import annotations

import json
from typing import Any

# USD per million tokens (input, output), list prices of common teachers; --price-in/out override.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "o4-mini": (1.10, 4.40),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-opus-4": (15.00, 75.00),
}
CHARS_PER_TOKEN = 4
IMAGE_TOKENS = 800  # a rough figure for one image part


def price(model: str, price_in: float | None = None, price_out: float | None = None) -> tuple[float, float]:
    """Per-million prices: the overrides, else the longest table entry the model name starts with, else 0."""
    match = max((name for name in PRICES if model.startswith(name)), key=len, default=None)
    table = PRICES[match] if match else (0.0, 0.0)
    return (table[0] if price_in is None else price_in, table[1] if price_out is None else price_out)


def cost(model: str, tokens_in: int, tokens_out: int, price_in: float | None = None,
         price_out: float | None = None) -> float:
    p_in, p_out = price(model, price_in, price_out)
    return (tokens_in * p_in + tokens_out * p_out) / 1_000_000


def estimate_tokens(body: dict[str, Any]) -> int:
    """Input tokens of a request body from its text length (chars / 4) plus a flat cost per image."""
    text = json.dumps(body.get("messages", []), ensure_ascii=False) + str(body.get("system", ""))
    images = text.count('"image_url"') + text.count('"type": "image"')
    return len(text) // CHARS_PER_TOKEN + images * IMAGE_TOKENS
