"""Teacher cost per scored sentence: one call per rationale vs one call per question (grouped),
priced with and without the provider's prompt cache, and how far the two designs' scores agree.

    .venv/bin/python benchmarks/teacher_cost.py [--questions 300] [--cache-min-tokens 1024]

Both designs score the same gold rationales (the A-OKVQA val sample, 3 per question), each in
its own store. Without --base-url each talks to its own fake teacher (cached tokens: the head of
a request sent before, when at least --cache-min-tokens long; OpenAI and Anthropic cache no
shorter prefix), whose scores do not depend on the grouping, so agreement is 1 by construction.
Against a real teacher (this spends money; a few cents at gpt-4o-mini prices for 300 questions):

    OPENAI_API_KEY=... .venv/bin/python benchmarks/teacher_cost.py --base-url https://api.openai.com/v1 \\
        --model gpt-4o-mini --questions 300
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
from pathlib import Path

from ares_data.fake_teacher import serve_in_thread
from ares_data.evaluation import spearman
from ares_data.importers._common import write_records
from ares_data.importers.aokvqa import read_aokvqa
from ares_data.store import Store
from ares_data.teacher import TeacherConfig, collect_scores
from ares_data.teacher.pricing import cost

DATA = Path("/work/shared/data/aokvqa/aokvqa_v1p0_val.json")
SCORES = ("SELECT r.dedup_key, s.idx, ss.score FROM sentence_score ss JOIN sentence s ON s.id = ss.sentence_id "
          "JOIN rationale r ON r.id = s.rationale_id")
USAGE = ("SELECT COALESCE(SUM(tokens_in), 0), COALESCE(SUM(cached_tokens_in), 0), "
         "COALESCE(SUM(cache_write_tokens_in), 0), COALESCE(SUM(tokens_out), 0), COUNT(*) FROM teacher_call")


def run(args: argparse.Namespace, records: list, grouped: bool, tmp: Path) -> dict:
    """Score the gold rationales in a fresh store; usage totals and scores by (rationale, sentence)."""
    with contextlib.ExitStack() as stack:
        url = args.base_url or stack.enter_context(serve_in_thread(cache_min_tokens=args.cache_min_tokens))
        store = stack.enter_context(Store(tmp / f"{'grouped' if grouped else 'single'}.db"))
        write_records(store, "aokvqa", records)
        config = TeacherConfig.from_options(base_url=url, model=args.model, provider=args.provider,
                                            concurrency=args.concurrency, rpm=args.rpm)
        summary = asyncio.run(collect_scores(store, config, rationales="gold",
                                             group_by_question=grouped))
        tokens_in, cached, written, tokens_out, calls = store.query_readonly(USAGE)[1][0]
        scores = {(key, idx): score for key, idx, score in store.query_readonly(SCORES)[1]}
    price = args.price_model or args.model
    return {"calls": calls, "sentences": len(scores), "failed": dict(summary.failed), "in": tokens_in,
            "cached": cached, "out": tokens_out, "scores": scores,
            "cost_nocache": cost(price, tokens_in, tokens_out),
            "cost_cache": cost(price, tokens_in, tokens_out, cached_in=cached, cache_write_in=written)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--base-url", help="A real teacher (default: a fake teacher on 127.0.0.1).")
    parser.add_argument("--provider", default="openai")
    parser.add_argument("--model", default="fake")
    parser.add_argument("--price-model", default="gpt-4o-mini", help="Price table entry for the cost columns.")
    parser.add_argument("--cache-min-tokens", type=int, default=1024, help="The fake teacher's cache minimum.")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rpm", type=float, default=6000)
    args = parser.parse_args()
    records = [r for r in read_aokvqa(DATA) if r.rationales][: args.questions]
    with tempfile.TemporaryDirectory() as tmp:
        single, grouped = (run(args, records, g, Path(tmp)) for g in (False, True))
    base = single["in"] / single["sentences"]
    print(f"{len(records)} questions, {sum(len(r.rationales) for r in records)} gold rationales; teacher "
          f"{args.base_url or 'fake'} ({args.model}); cost at {args.price_model} prices; "
          f"cache minimum {args.cache_min_tokens if not args.base_url else 'the provider’s'} tokens")
    print(f"{'design':8} {'calls':>6} {'sent.':>6} {'in/sent':>8} {'cached':>7} {'out/sent':>8} "
          f"{'$/1k sent, no cache':>20} {'$/1k sent, cached':>18} {'in ratio':>9}")
    for name, r in (("single", single), ("grouped", grouped)):
        n = r["sentences"]
        print(f"{name:8} {r['calls']:>6} {n:>6} {r['in'] / n:>8.1f} {r['cached'] / max(r['in'], 1):>7.1%} "
              f"{r['out'] / n:>8.1f} {r['cost_nocache'] / n * 1000:>20.5f} {r['cost_cache'] / n * 1000:>18.5f} "
              f"{r['in'] / n / base:>8.2f}x")
    shared = sorted(set(single["scores"]) & set(grouped["scores"]))
    a = [single["scores"][k] for k in shared]
    b = [grouped["scores"][k] for k in shared]
    mad = sum(abs(x - y) for x, y in zip(a, b)) / len(shared)
    print(f"agreement on {len(shared)} sentences scored by both: Spearman {spearman(a, b) or float('nan'):.3f}, "
          f"mean absolute difference {mad:.3f}; "
          f"failed: single {single['failed'] or 0}, grouped {grouped['failed'] or 0}")
    print(json.dumps({k: {f: v for f, v in r.items() if f != "scores"} for k, r in
                      (("single", single), ("grouped", grouped))}))


if __name__ == "__main__":
    main()
