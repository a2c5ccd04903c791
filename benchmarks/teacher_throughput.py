"""Teacher throughput against the fake teacher: achieved RPM vs. the limit, speed-up over a
sequential loop, 429s, lost and duplicate answers.

    .venv/bin/python benchmarks/teacher_throughput.py [--calls 2000] [--rpm 1200] [--latency-ms 300]
    .venv/bin/python benchmarks/teacher_throughput.py --collectors 4 [--pg-url URL]
    .venv/bin/python benchmarks/teacher_throughput.py --collectors 1 --calls 300 --rpm 600   # ~1 min

With --collectors N, N `ares collect-scores` processes share one store (SQLite, then
PostgreSQL: --pg-url, or a throwaway cluster started as the tests do) and the server limit;
each is given the same `--rpm` (the account's limit), which they share through the store
(teacher_rate_bucket): total achieved rate, the share of requests answered 429 (at most 2 %),
requests answered twice and duplicate scores (both must be 0), and the store's write rate in
sentence scores per second.

The fake teacher holds the server limit (--rpm) and the client is configured at the same
rate; the sequential loop (concurrency 1, the research code's shape) runs on a subset and its
rate is extrapolated.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from ares_data.fake_teacher import serve_in_thread
from ares_data.store import Store
from ares_data.tables import Question
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


ROOT = Path(__file__).resolve().parents[1]


def duplicates(store: Store) -> int:
    return store.query_readonly("SELECT COUNT(*) FROM (SELECT sentence_id FROM sentence_score GROUP BY sentence_id "
                                "HAVING COUNT(*) > 1) d")[1][0][0]


def shared_store(args: argparse.Namespace, db_url: str, label: str) -> None:
    """N collector processes on one store and one server limit."""
    with Store(db_url) as store:
        seed(store, args.calls, round=1)
    with serve_in_thread(latency_ms=args.latency_ms, rpm=args.rpm) as url:
        env = {**os.environ, "ARES_DB": db_url, "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-c", "from ares_data.cli import main; main()", "collect-scores", "--round", "1",
                   "--no-group-by-question", "--base-url", url, "--model", "fake", "--lease", "5",
                   "--rpm", str(args.rpm), "--concurrency", str(max(1, args.concurrency // args.collectors))]
        started = time.perf_counter()
        procs = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for _ in range(args.collectors)]
        failed = [p.communicate()[1] for p in procs if p.wait() != 0]
        elapsed = time.perf_counter() - started
        stats = httpx.get(url.removesuffix("/v1") + "/stats").json()
    with Store(db_url) as store:
        scores = store.query_readonly("SELECT COUNT(*) FROM sentence_score")[1][0][0]
        first, last = store.query_readonly("SELECT MIN(created_at), MAX(created_at) FROM sentence_score")[1][0]
        asked, answered = store.query_readonly("SELECT MIN(started_at), MAX(finished_at) FROM teacher_call")[1][0]
        doubled = duplicates(store)
    if failed:
        print(f"{label}: {len(failed)} collectors failed: {failed[0][-500:]}")
    span = (_as_datetime(last) - _as_datetime(first)).total_seconds()
    calling = (_as_datetime(answered) - _as_datetime(asked)).total_seconds()
    print(f"{label}: {args.collectors} collectors, {stats['answered']} calls in {calling:.1f} s from first request "
          f"to last answer ({elapsed:.1f} s with process starts) = {stats['answered'] / calling * 60:.0f} RPM "
          f"= {stats['answered'] / calling * 60 / args.rpm:.3f} of the shared {args.rpm:g} RPM; "
          f"429s {stats['by_status'].get('429', 0)} of {stats['requests']} requests "
          f"({stats['by_status'].get('429', 0) / max(1, stats['requests']):.1%})")
    print(f"{label}: requests answered twice {stats['answered_twice']}; duplicate scores {doubled}; "
          f"{scores} sentence scores written at {scores / span:.0f}/s (first to last write)")


def _as_datetime(value):  # SQLite returns text, PostgreSQL a datetime
    from datetime import datetime

    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def several_collectors(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        shared_store(args, str(Path(tmp) / "shared.db"), "sqlite")
        pg_url = args.pg_url
        if pg_url is None:
            sys.path.insert(0, str(ROOT / "tests"))
            from pg_cluster import ClusterUnavailable, fresh_database, running_cluster

            try:
                pg_url = stack.enter_context(fresh_database(stack.enter_context(running_cluster())))
            except ClusterUnavailable as exc:
                print(f"postgresql: skipped ({exc})")
                return
        shared_store(args, pg_url, "postgresql")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--sequential-calls", type=int, default=40)
    parser.add_argument("--rpm", type=float, default=1200)
    parser.add_argument("--latency-ms", type=float, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--collectors", type=int, default=0, help="N collector processes on one store")
    parser.add_argument("--pg-url", help="PostgreSQL store for --collectors (default: a throwaway cluster)")
    args = parser.parse_args()
    if args.collectors:
        several_collectors(args)
        return
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.db") as store:
        seed(store, args.sequential_calls, round=1)
        seed(store, args.calls, round=2)
        with serve_in_thread(latency_ms=args.latency_ms, rpm=args.rpm) as url:
            sequential = TeacherConfig.from_options(base_url=url, model="fake", rpm=args.rpm, concurrency=1)
            started = time.perf_counter()
            asyncio.run(collect_scores(store, sequential, round=1))
            sequential_rpm = args.sequential_calls / (time.perf_counter() - started) * 60
            time.sleep(1.0)  # let the server's one-second bucket refill
            before = httpx.get(url.removesuffix("/v1") + "/stats").json()
            config = TeacherConfig.from_options(base_url=url, model="fake", rpm=args.rpm,
                                                concurrency=args.concurrency)
            started = time.perf_counter()
            summary = asyncio.run(collect_scores(store, config, round=2))
            elapsed = time.perf_counter() - started
            after = httpx.get(url.removesuffix("/v1") + "/stats").json()
        scored = store.query_readonly(
            "SELECT COUNT(DISTINCT s.rationale_id) FROM sentence_score ss JOIN sentence s ON s.id = ss.sentence_id "
            "JOIN rationale r ON r.id = s.rationale_id WHERE r.round = 2")[1][0][0]
        doubled = duplicates(store)
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
