"""Teacher throughput against the fake teacher: achieved RPM vs. the limit, speed-up over a
sequential loop, 429s, lost and duplicate answers.

    .venv/bin/python benchmarks/teacher_throughput.py [--calls 2000] [--rpm 1200] [--latency-ms 300]

The fake teacher holds the server limit (--rpm) and the client is configured at the same
rate; the sequential loop (concurrency 1, the research code's shape) runs on a subset and its
rate is extrapolated.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import httpx

from ares_data.fake_teacher import serve_in_thread
from ares_data.models import Question
from ares_data.store import Store
from ares_data.teacher import TeacherConfig, collect_scores


def seed(store: Store, n: int, round: int) -> None:
    """`n` student rationales of 3-5 sentences, one question per rationale."""
    with store.session() as session:
        for i in range(n):
            q = Question(dataset="bench", source_id=f"{round}-{i}", split="train", question=f"Question {i}?",
                         choices=["a", "b", "c"], answer_index=i % 3)
            session.add(q)
            session.flush()
            text = " ".join(f"Step {j} of rationale {i} at round {round}." for j in range(3 + i % 3))
            store.add_rationale(session, question_id=q.id, source="student", text=text,
                                dedup_key=f"bench:{round}:{i}", round=round)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--sequential-calls", type=int, default=40)
    parser.add_argument("--rpm", type=float, default=1200)
    parser.add_argument("--latency-ms", type=float, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.db") as store:
        seed(store, args.sequential_calls, round=1)
        seed(store, args.calls, round=2)
        with serve_in_thread(latency_ms=args.latency_ms, rpm=args.rpm) as url:
            sequential = TeacherConfig.from_options(base_url=url, model="fake", rpm=args.rpm, concurrency=1)
            started = time.perf_counter()
            asyncio.run(collect_scores(store, sequential, round=1, progress=False))
            sequential_rpm = args.sequential_calls / (time.perf_counter() - started) * 60
            time.sleep(1.0)  # let the server's one-second bucket refill
            before = httpx.get(url.removesuffix("/v1") + "/stats").json()
            config = TeacherConfig.from_options(base_url=url, model="fake", rpm=args.rpm,
                                                concurrency=args.concurrency)
            started = time.perf_counter()
            summary = asyncio.run(collect_scores(store, config, round=2, progress=False))
            elapsed = time.perf_counter() - started
            after = httpx.get(url.removesuffix("/v1") + "/stats").json()
        scored = store.query_readonly(
            "SELECT COUNT(DISTINCT s.rationale_id) FROM sentence_score ss JOIN sentence s ON s.id = ss.sentence_id "
            "JOIN rationale r ON r.id = s.rationale_id WHERE r.round = 2")[1][0][0]
        doubled = store.query_readonly(
            "SELECT COUNT(*) FROM (SELECT sentence_id FROM sentence_score GROUP BY sentence_id "
            "HAVING COUNT(*) > 1) d")[1][0][0]
    achieved = summary.calls / elapsed * 60
    print(f"calls {summary.calls} in {elapsed:.1f} s; latency {args.latency_ms:g} ms; server limit {args.rpm:g} RPM; "
          f"client --rpm {args.rpm:g}, --concurrency {args.concurrency}")
    print(f"achieved {achieved:.0f} RPM = {achieved / args.rpm:.3f} of the configured RPM")
    print(f"sequential loop: {sequential_rpm:.0f} RPM over {args.sequential_calls} calls; "
          f"speed-up {achieved / sequential_rpm:.1f}x (latency alone bounds it at "
          f"{args.rpm / (60_000 / args.latency_ms):.1f}x)")
    print(f"429 responses: {after['by_status'].get('429', 0) - before['by_status'].get('429', 0)}")
    print(f"lost answers: {args.calls - scored}; duplicate scores: {doubled}; "
          f"requests answered twice: {after['answered_twice']}")


if __name__ == "__main__":
    main()
