"""The statistics of `ares_effect.py`, as pure functions: paired per-question differences, a
bootstrap over seeds x questions, and the verdict rule fixed before the run (docs/benchmarks.md).

A seed's arms share its student, its round, dev and test questions, and its teacher, so two
arms are compared question by question within a seed: the student's own spread cancels. The
bootstrap resamples seeds, then questions within each drawn seed, so the interval carries both
the between-student and the between-question variance (one seed: questions only).
"""

from __future__ import annotations

import numpy as np

Interval = tuple[float, float, float]  # mean, 2.5 % and 97.5 % bootstrap quantiles


def paired(a: list[list[float]], b: list[list[float]]) -> list[list[float]]:
    """Per seed, per question: a - b (both indexed [seed][question] over the same questions)."""
    if [len(s) for s in a] != [len(s) for s in b]:
        raise ValueError("paired differences need the same seeds and questions on both sides")
    return [[x - y for x, y in zip(sa, sb)] for sa, sb in zip(a, b)]


def bootstrap(values: list[list[float]], draws: int = 2000, seed: int = 0) -> Interval:
    """Mean of `values` ([seed][question]) and its 95 % interval: seeds resampled with
    replacement, then each drawn seed's questions resampled with replacement."""
    if not values or not all(values):
        raise ValueError("bootstrap needs at least one seed with at least one question")
    rng = np.random.default_rng(seed)
    seeds = [np.asarray(v, dtype=float) for v in values]
    means = np.empty(draws)
    for d in range(draws):
        picked = rng.integers(len(seeds), size=len(seeds)) if len(seeds) > 1 else [0]
        means[d] = np.mean([seeds[s][rng.integers(len(seeds[s]), size=len(seeds[s]))].mean() for s in picked])
    mean = float(np.mean([s.mean() for s in seeds]))
    return mean, float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def difference(a: list[list[float]], b: list[list[float]], draws: int = 2000, seed: int = 0) -> Interval:
    """a - b, paired per question, with its bootstrap interval."""
    return bootstrap(paired(a, b), draws, seed)


MARGIN = 0.02  # `ares - sft_only` below this at its upper bound, under every fallible profile: refuted


def verdict(ares_vs_sft: dict[str, dict[str, Interval]],
            sentence_vs_outcome: dict[str, dict[str, Interval]]) -> str:
    """The rule stated before the run, for one advantage estimator. Arguments per profile (`llm`,
    `sparse`), per metric (`accuracy`, `chain`): the intervals of ares - sft_only and of
    rl_sentence - rl_outcome. `supported`: under both profiles ares - sft_only is above 0 (lower
    bound > 0, accuracy or chain) and rl_sentence beats rl_outcome (lower bound > 0, either
    metric); `refuted`: under both, ares - sft_only has its upper bound below +0.02 (accuracy and
    chain); `incomplete` without both profiles; else `inconclusive`."""
    profiles = ("llm", "sparse")
    if not all(p in ares_vs_sft and p in sentence_vs_outcome for p in profiles):
        return "incomplete"
    if all(any(ares_vs_sft[p][m][1] > 0 for m in ares_vs_sft[p]) and
           any(sentence_vs_outcome[p][m][1] > 0 for m in sentence_vs_outcome[p]) for p in profiles):
        return "supported"
    if all(all(ares_vs_sft[p][m][2] < MARGIN for m in ares_vs_sft[p]) for p in profiles):
        return "refuted"
    return "inconclusive"
