"""What a distilled PRM costs and how far it agrees with its teacher, on this machine.

    .venv/bin/python benchmarks/prm_cost.py [--questions 24] [--model smollm2] [--epochs 1]

The store: A-OKVQA val gold rationales (../shared/data; 3 per question) turned into student
rationales whose sentences are kept, cut short, word-shuffled or repeated, and scored by a rule
teacher that applies the mechanical part of the ARES rubric (intact 1.0, incomplete 0.3, word
salad 0.1, a repeated sentence 0.0). Questions are split in two: round 1 trains the PRM
(`train_prm`, LoRA + score head on --model), round 2 is held out. The PRM then scores round 2
through `collect_scores(provider prm)` (the teacher path, store writes included), timed; the
agreement is `v_agreement` on round 2 (the PRM against the rule teacher, sentences it never saw).
For comparison, the same round-2 requests are priced for an API teacher with a dry run
(--price-model, grouped by question as `collect-scores` does by default). The last line is JSON.

The rule teacher stands in for a real one (no network here). Against your own teacher, train on
its scores and read `ares agreement --round N` on a round the PRM did not learn from.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import tempfile
import time
from pathlib import Path

from sqlmodel import select

from ares_data.importers._common import write_records
from ares_data.importers.aokvqa import read_aokvqa
from ares_data.review.agreement import agreement
from ares_data.store import Store
from ares_data.tables import Rationale, Sentence, SentenceScore, TeacherCall
from ares_data.teacher import TeacherConfig, collect_scores
from ares_train.loading import ensure_base_checkpoint
from ares_train.prm_config import PRMConfig
from ares_train.prm_trainer import train_prm
from ares_train.stages import training_run_of

DATA = Path("/work/shared/data/aokvqa/aokvqa_v1p0_val.json")
TEACHER = "rubric-rules"


def _words(sentence: str) -> list[str]:
    return sentence.rstrip(".!?").split()


def corrupt(sentences: list[str], rng: random.Random) -> list[tuple[str, float]]:
    """Each sentence kept (1.0), cut short (0.3), word-shuffled (0.1) or replaced by a repeat of the
    one before (0.0)."""
    out: list[tuple[str, float]] = []
    for s in sentences:
        draw, words = rng.random(), _words(s)
        if draw < 0.2 and out:
            out.append((out[-1][0], 0.0))
        elif draw < 0.4 and len(words) >= 4:
            out.append((" ".join(words[: len(words) // 2]) + ".", 0.3))
        elif draw < 0.6 and len(words) >= 4:
            shuffled = words[:]
            while shuffled == words:
                rng.shuffle(shuffled)
            out.append((" ".join(shuffled).capitalize() + ".", 0.1))
        else:
            out.append((s if s.endswith((".", "!", "?")) else s + ".", 1.0))
    return out


def build_store(store: Store, questions: int, seed: int) -> int:
    """Questions, rule-scored student rationales (round 1: first 3/4 of the questions, round 2: the
    rest); returns the number of scored sentences."""
    records = [r for r in read_aokvqa(DATA) if r.rationales][:questions]
    write_records(store, "aokvqa", records)
    rng, scored = random.Random(seed), 0
    with store.session() as session:
        gold = session.exec(select(Rationale).where(Rationale.source == "gold").order_by(Rationale.id)).all()
        order = sorted({r.question_id for r in gold})
        held_out = set(order[len(order) * 3 // 4:])
        for g in gold:
            texts = [s.text for s in session.exec(select(Sentence).where(Sentence.rationale_id == g.id)
                                                  .order_by(Sentence.idx))]
            labelled = corrupt(texts, rng)
            row, _ = store.add_rationale(session, question_id=g.question_id, source="student",
                                         text=" ".join(t for t, _ in labelled), dedup_key=f"bench:{g.id}",
                                         round=2 if g.question_id in held_out else 1)
            session.flush()
            stored = session.exec(select(Sentence).where(Sentence.rationale_id == row.id).order_by(Sentence.idx)).all()
            if [s.text for s in stored] != [t for t, _ in labelled]:
                continue  # the splitter cut it otherwise: left unscored
            call = TeacherCall(kind="score", provider="rules", model=TEACHER, prompt_name="rules",
                               prompt_version="v1", request_hash=f"bench-{row.id}", request={}, status="ok",
                               question_id=row.question_id, rationale_id=row.id, cost_usd=0.0)
            session.add(call)
            session.flush()
            session.add_all(SentenceScore(sentence_id=s.id, teacher_call_id=call.id, score=score)
                            for s, (_, score) in zip(stored, labelled))
            scored += len(stored)
    return scored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=24)
    parser.add_argument("--model", default="smollm2", help="PRM backbone: 'smollm2' or a model directory.")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--price-model", default="gpt-4o-mini")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not DATA.is_file():
        raise SystemExit(f"needs the A-OKVQA val file at {DATA}")
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "prm.db") as store:
        scored = build_store(store, args.questions, args.seed)
        config = PRMConfig(num_train_epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                           device=args.device, validation_fraction=0.1, seed=args.seed)
        started, cpu = time.perf_counter(), time.process_time()
        prm = train_prm(store, ensure_base_checkpoint(store, args.model), config=config, teacher=TEACHER,
                        sources=("student",), rounds=[1], output_dir=Path(tmp) / "prm")
        train_s, train_cpu = time.perf_counter() - started, time.process_time() - cpu
        run = training_run_of(store, prm)
        teacher = TeacherConfig.from_options(provider="prm", model=prm.name, device=args.device, concurrency=16)
        started, cpu = time.perf_counter(), time.process_time()
        summary = asyncio.run(collect_scores(store, teacher, round=2))
        score_s, score_cpu = time.perf_counter() - started, time.process_time() - cpu
        _, rows = store.query_readonly("SELECT COUNT(*) FROM sentence_score ss JOIN teacher_call c"
                                       " ON c.id = ss.teacher_call_id WHERE c.provider = 'prm'")
        prm_sentences = rows[0][0]
        api = TeacherConfig.from_options(provider="openai", model=args.price_model)
        dry = asyncio.run(collect_scores(store, api, round=2, dry_run=True, group_by_question=True))
        _, rows = store.query_readonly("SELECT COUNT(*) FROM sentence s JOIN rationale r ON r.id = s.rationale_id"
                                       " WHERE r.round = 2")
        round2_sentences = rows[0][0]
        pair = next(r for r in agreement(store, 2) if {r["labeller_a"], r["labeller_b"]} == {prm.name, TEACHER})
    result = {
        "questions": args.questions, "teacher_scored_sentences": scored, "backbone": args.model,
        "train_rationales": run.metrics["data"]["train_rationales"], "epochs": args.epochs,
        "train_seconds": round(train_s, 1), "train_cpu_seconds": round(train_cpu, 1),
        "prm_scored_sentences": prm_sentences, "prm_failed": dict(summary.failed),
        "score_seconds": round(score_s, 1), "score_cpu_seconds": round(score_cpu, 1),
        "prm_seconds_per_1k_sentences": round(score_s / prm_sentences * 1000, 1),
        "prm_cpu_seconds_per_1k_sentences": round(score_cpu / prm_sentences * 1000, 1),
        "load_average_1min": round(os.getloadavg()[0], 1), "cpus": os.cpu_count(),
        "prm_api_usd_per_1k_sentences": 0.0,
        "api_teacher": args.price_model,
        "api_usd_per_1k_sentences_grouped": round(dry.est_cost_usd / round2_sentences * 1000, 5),
        "heldout_spearman": round(pair["spearman"], 3) if pair["spearman"] is not None else None,
        "heldout_mean_abs_diff": round(pair["mean_abs_diff"], 3),
        "heldout_exact_agreement": round(pair["exact_agreement"], 3),
        "heldout_shared_sentences": pair["shared_sentences"],
        "internal_val_mae_before_after": [run.metrics["summary"]["val_mae_before"], run.metrics["summary"]["val_mae"]],
    }
    print(f"PRM on {args.model}: trained on {result['train_rationales']} rationales in {result['train_seconds']} s "
          f"({result['train_cpu_seconds']} CPU s); scored {prm_sentences} held-out sentences in "
          f"{result['score_seconds']} s ({result['score_cpu_seconds']} CPU s): "
          f"{result['prm_seconds_per_1k_sentences']} s, "
          f"{result['prm_cpu_seconds_per_1k_sentences']} CPU s per 1k sentences, $0 API "
          f"(load average {result['load_average_1min']} on {result['cpus']} CPUs)")
    print(f"held-out agreement with the teacher: Spearman {result['heldout_spearman']}, mean absolute difference "
          f"{result['heldout_mean_abs_diff']}, exact {result['heldout_exact_agreement']} on "
          f"{pair['shared_sentences']} sentences; {args.price_model} would cost "
          f"${result['api_usd_per_1k_sentences_grouped']} per 1k sentences (grouped, estimated)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
