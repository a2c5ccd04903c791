"""Dry-run token estimates calibrated on the store's past calls of the same prompt version.

A request's tokens are first estimated from its length (chars / 4, `pricing.estimate_tokens`),
which misses the tokenizer by 20 % or more. Each past answered call of the same prompt name,
version and model says how many input and output tokens the provider counted per estimated
input token; a dry run scales its estimate by their medians and gives the range they span.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from statistics import median

from ..store import Store
from .pricing import estimate_tokens

PAST_CALLS = 200  # the latest answered calls looked at

_PAST_SQL = """
SELECT request, tokens_in, tokens_out FROM teacher_call
WHERE prompt_name = :name AND prompt_version = :version AND model = :model AND status = 'ok'
  AND tokens_in IS NOT NULL AND tokens_out IS NOT NULL AND repair_of_id IS NULL
ORDER BY id DESC LIMIT :n
"""


@dataclass(frozen=True)
class Calibration:
    """Provider tokens per estimated input token, from `calls` past calls (0: none, ratios 1 and 0)."""

    calls: int = 0
    tokens_in: float = 1.0  # median ratio: counted input tokens / estimated
    tokens_out: float = 0.0  # median ratio: output tokens / estimated input tokens
    low: float = 1.0  # the least and most (input + output) / estimated seen
    high: float = 1.0


def calibrate(store: Store, model: str, prompt_name: str, prompt_version: str) -> Calibration:
    """The ratios of the latest answered, unrepaired calls of this prompt version and model."""
    rows = store.query_readonly(_PAST_SQL, {"name": prompt_name, "version": prompt_version, "model": model,
                                            "n": PAST_CALLS})[1]
    ratios = []
    for request, tokens_in, tokens_out in rows:
        estimated = estimate_tokens(json.loads(request) if isinstance(request, str) else request)
        if estimated > 0:
            ratios.append((tokens_in / estimated, tokens_out / estimated))
    if not ratios:
        return Calibration()
    totals = [i + o for i, o in ratios]
    return Calibration(len(ratios), median(i for i, _ in ratios), median(o for _, o in ratios),
                       min(totals), max(totals))
