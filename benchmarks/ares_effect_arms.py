"""The stages of `ares_effect.py`: the plan, the student it prepares, the arms it runs, what it measures.

Every arm runs through the project's own stages (rollouts, the collectors against the fake
teacher on 127.0.0.1, exports, `train_rl`, `train_sft`, `run_loop`, `evaluate_accuracy`) on its
own store; this module only decides what each arm calls, in which order, with how many samples.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from sqlmodel import func, select

from ares_data.errors import ExportError
from ares_data.checkable import DATASET, chain_is_correct, make_family, write_records
from ares_data.formatting import parse_answer, student_prompt
from ares_data.importers import import_jsonl
from ares_data.store import Store
from ares_data.tables import ModelCheckpoint, Rationale, TeacherCall
from ares_data.teacher import TeacherConfig, collect_corrections, collect_scores

console = Console()
KINDS = ("base", "gold_sft", "sft_only", "rl_outcome", "rl_sentence", "ares")
RL_KINDS = ("rl_outcome", "rl_sentence", "ares")
Measure = dict[str, list[float]]  # per question, in the split's order: accuracy (0/1), chain (0/1)


@dataclass
class Plan:
    """What one run does; `--quick` and the full run differ only here."""

    student: str = "small"
    seeds: int = 4
    profiles: tuple[str, ...] = ("llm", "sparse")
    kinds: tuple[str, ...] = ("base", "sft_only", "rl_outcome", "rl_sentence", "ares")
    advantages: tuple[str, ...] = ("gae", "grpo")
    rounds: int = 3
    round_questions: int = 64
    samples: int = 8  # student samples per round question in every arm; ares: half before its PPO, half after
    dev_questions: int = 200  # each round's measure and the learning-rate choice
    test_questions: int = 500  # once, at the end, for the chosen learning rate; fresh per seed
    max_new_tokens: int = 80  # a 6-operation gold rationale is ~60 tokens of the small student's tokenizer
    temperature: float = 1.0
    threads: int = 2
    rl_lrs: tuple[float, ...] = (1e-4, 3e-4, 1e-3)  # 3e-4 and 1e-3 both took rl_outcome below base
    sft_lrs: tuple[float, ...] = (3e-4, 1e-3)
    prep_questions: int = 5000  # gold rationales of 2-4-operation questions the student is prepared on
    prep_long_share: float = 0.1  # plus this share of 5-6-operation ones
    prep_dev: int = 200  # 2-4 operations: the preparation stops when their accuracy plateaus
    prep_calib: int = 200  # 5-6 operations: the prepared student writes 20-35 % of their chains right
    prep_band: tuple[float, float] = (0.20, 0.35)
    prep_patience: int = 5  # checks without a dev accuracy gain of 0.01: a plateau
    prep_max_steps: int = 4000
    prep_check_every: int = 100  # a check (400 greedy answers) costs ~30 training steps
    prep_batch: int = 16  # learns as much per step as 32 did, at half the cost
    prep_lr: float = 1e-3  # all weights
    prep_calib_questions: int = 2000  # 5-6-operation gold rationales of the calibration phase
    prep_calib_share: float = 0.5  # of each calibration batch; the rest are 2-4-operation ones
    prep_calib_steps: int = 2000  # 0: no calibration phase
    prep_calib_check_every: int = 10
    prep_calib_lr: float = 2e-4  # at 1e-3, 10 steps took right chains from 10 % to 36 %, past the band
    rl: dict[str, Any] = field(default_factory=lambda: {"batch_size": 16, "mini_batch_size": 8, "max_length": 320,
                                                        "kl_coef": 1e-4, "ppo_epochs": 2})
    sft: dict[str, Any] = field(default_factory=lambda: {"batch_size": 8, "max_length": 320, "num_train_epochs": 1.0})


@dataclass(frozen=True)
class Arm:
    kind: str
    advantage: str | None = None  # RL arms only

    @property
    def name(self) -> str:
        return self.kind if self.advantage is None else f"{self.kind}/{self.advantage}"


def arms_of(plan: Plan) -> list[Arm]:
    """The plan's arms in the order they must run (ares takes sft_only's SFT rate)."""
    kinds = [k for k in KINDS if k in plan.kinds]
    return [Arm(k, a) for k in kinds for a in (plan.advantages if k in RL_KINDS else (None,))]


def checked_advantages(requested: tuple[str, ...]) -> tuple[str, ...]:
    """The RL arms' advantage estimators: gae and grpo take sentence rewards; rloo does not."""
    wrong = set(requested) - {"gae", "grpo"}
    if wrong or not requested:
        raise ValueError(f"--advantages takes gae and/or grpo, not {','.join(sorted(wrong)) or 'nothing'}")
    return requested


def rl_overrides(plan: Plan, arm: Arm, lr: float) -> dict[str, Any]:
    """PPOConfig fields of an RL arm: rl_outcome and rl_sentence differ in the reward's placement only."""
    return {**plan.rl, "learning_rate": lr, "reward_placement": "final" if arm.kind == "rl_outcome" else "sentence",
            "advantage": arm.advantage}


# -- questions and the student ---------------------------------------------------------------

def seed_questions(plan: Plan, seed: int) -> dict[str, list[dict]]:
    """The seed's questions by split, all distinct. The preparation's are the same for every
    seed (one student is prepared, `prepare`) and drawn first, so its cache does not depend on
    the round, dev and test sizes; the rounds', dev and test questions are the seed's own and
    none of them is a preparation question."""
    long = round(plan.prep_questions * plan.prep_long_share)
    prep = make_family({"prep": (plan.prep_questions, 2, 4), "prep_long": (long, 5, 6),
                        "prep_dev": (plan.prep_dev, 2, 4), "calib": (plan.prep_calib, 5, 6),
                        "prep_calib": (plan.prep_calib_questions, 5, 6)}, seed=0)
    rest = make_family({"train": (plan.round_questions, 5, 6), "dev": (plan.dev_questions, 5, 6),
                        "test": (plan.test_questions, 5, 6)}, seed=1000 + seed, exclude=prep)
    out: dict[str, list[dict]] = {split: [] for split in ("prep", "prep_long", "prep_dev", "calib", "prep_calib",
                                                          "train", "dev", "test")}
    for record in prep + rest:
        out[record["split"]].append(record)
    return out


def write_tasks(path: Path, questions: dict[str, list[dict]]) -> Path:
    """What every arm of a seed imports: the rounds' questions, dev and test."""
    write_records(path, questions["train"] + questions["dev"] + questions["test"])
    return path


def small_student(out: Path, seed: int, corpus: list[str]) -> Path:
    """A random 4-layer Llama (hidden 128) with its own byte-level BPE tokenizer, trained on
    `corpus` (the task's prompts and rationales, digits one token each), saved to `out`. A
    vocabulary of a few hundred tokens instead of SmolLM2's 49,152 makes every stage ~50x
    cheaper, so the model can be wide enough to learn the task on two cores."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                        pad_token="<|endoftext|>")
    config = LlamaConfig(
        hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
        vocab_size=len(tokenizer), max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def as_question(record: dict) -> dict:
    """A generated record in the shape `student_prompt` reads."""
    return {"question": record["question"], "hint": None, "caption": None, "choices": record["choices"],
            "answer_index": record["answer"]}


def greedy_check(model: Any, tokenizer: Any, records: list[dict], max_new_tokens: int) -> tuple[float, float]:
    """(accuracy, correct-chain share) of an in-memory student's greedy answers, asked the way
    `evaluate_accuracy` asks them."""
    from ares_train.rollout_engines import HFEngine
    from ares_train.rollouts import sample_responses

    model.eval()
    sampled = sample_responses(HFEngine(model, tokenizer), tokenizer, [student_prompt(as_question(r)) for r in records],
                               batch_size=50, max_new_tokens=max_new_tokens, do_sample=False)
    model.train()
    texts = [one.text for (one,) in sampled]
    return (statistics.fmean(parse_answer(t, len(r["choices"])) == r["answer"] for r, t in zip(records, texts)),
            statistics.fmean(chain_is_correct(r["question"], t) for r, t in zip(records, texts)))


def _settings(plan: Plan, *fields: str) -> str:
    """The plan's values of `fields` as a directory name."""
    return "-".join(str(getattr(plan, f)) for f in fields).translate(str.maketrans(",", "_", " ()"))


def prep_key(plan: Plan) -> str:
    """The settings the plateau phase depends on (its cache directory's name)."""
    return _settings(plan, "student", "prep_questions", "prep_long_share", "prep_dev", "prep_calib", "prep_band",
                     "prep_patience", "prep_max_steps", "prep_check_every", "prep_batch", "prep_lr", "max_new_tokens")


def _examples(tokenizer: Any, records: list[dict]) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) of gold rationales: the loss falls on the rationale only."""
    from ares_train.prompting import format_prompt

    out = []
    for r in records:
        prompt = tokenizer(format_prompt(tokenizer, student_prompt(as_question(r))), add_special_tokens=False).input_ids
        answer = tokenizer(r["rationale"], add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        out.append((prompt + answer, [-100] * len(prompt) + answer))
    return out


def _gold_sft(model: Any, tokenizer: Any, pools: list[tuple[list, int]], plan: Plan, questions: dict[str, list[dict]],
              seed: int, max_steps: int, check_every: int, lr: float, stop: Callable[[dict], bool],
              label: str) -> list[dict]:
    """Gold SFT (all weights, AdamW) on batches of `count` examples drawn from each pool, checked
    every `check_every` steps on held-out 2-4-operation questions (accuracy) and
    round-length ones (right chains), until `stop(check)` or `max_steps`; returns the checks.
    The model is left at the last check; the last in-band check keeps its weights in `state`."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    trace: list[dict] = []
    model.train()
    step = 0
    while step < max_steps:
        for _ in range(check_every):
            batch = [pool[i] for pool, count in pools for i in torch.randint(len(pool), (count,), generator=generator)]
            width = max(len(ids) for ids, _ in batch)
            ids = torch.tensor([i + [tokenizer.pad_token_id] * (width - len(i)) for i, _ in batch])
            labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
            mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in batch])
            hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
            keep = labels[:, 1:] != -100  # the vocabulary projection only where there is a label
            loss = torch.nn.functional.cross_entropy(model.lm_head(hidden[keep]), labels[:, 1:][keep])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
        dev_accuracy, _ = greedy_check(model, tokenizer, questions["prep_dev"], plan.max_new_tokens)
        calib_accuracy, calib_chain = greedy_check(model, tokenizer, questions["calib"], plan.max_new_tokens)
        trace.append({"step": step, "dev_accuracy": dev_accuracy, "calib_accuracy": calib_accuracy,
                      "calib_chain": calib_chain})
        console.print(f"  {label} seed {seed}: step {step}, loss {loss.item():.3f}, dev accuracy (2-4 ops) "
                      f"{dev_accuracy:.2f}, right chains (5-6 ops) {calib_chain:.2f}")
        if plan.prep_band[0] <= calib_chain <= plan.prep_band[1]:  # one copy of the weights at most
            for check in trace:
                check.pop("state", None)
            trace[-1]["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if stop(trace[-1]):
            break
    return trace


def _saved(model: Any, tokenizer: Any, out: Path, trace: list[dict], **info: Any) -> dict[str, Any]:
    """The last in-band check's weights (else the last check's) saved to `out`, with the trace."""
    kept = [i for i, check in enumerate(trace) if "state" in check]
    at = kept[-1] if kept else len(trace) - 1
    if kept:
        model.load_state_dict(trace[at]["state"])
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    trace = [{k: v for k, v in check.items() if k != "state"} for check in trace]
    result = {"model": str(out), **trace[at], "calibrated": bool(kept), "steps_run": trace[-1]["step"], **info,
              "trace": trace}
    (out / "prepared.json").write_text(json.dumps(result))
    return result


def prepare(plan: Plan, questions: dict[str, list[dict]], seed: int, out: Path) -> dict[str, Any]:
    """The student every arm of a seed starts from, in two gold-SFT phases, each cached.

    Plateau (in `out`): trained on 2-4-operation questions plus a share of 5-6-operation ones
    until the 2-4-operation dev accuracy plateaus (`prep_patience` checks without a 0.01 gain),
    the round-length chains pass the band's top, or `prep_max_steps`. Calibration (in a
    subdirectory), only when the plateaued student writes fewer round-length chains right than
    the band's bottom (20 %): continued on `prep_calib_share` of 5-6-operation questions per
    batch at `prep_calib_lr`, checked every `prep_calib_check_every` steps, until a check falls
    in the band or above it, or `prep_calib_steps`. Either keeps its last check inside the band
    (`calibrated`), else its last one. Neither looks at the rounds', dev or test questions."""
    from ares_train.loading import load_student

    started = time.monotonic()
    done = out / "prepared.json"
    if done.is_file():
        plateau = json.loads(done.read_text())
    else:
        out.mkdir(parents=True, exist_ok=True)
        train = questions["prep"] + questions["prep_long"]
        if plan.student == "small":  # its tokenizer has no chat template, so it sees format_prompt's plain form
            corpus = [f"{student_prompt(as_question(r))}\nAnswer: {r['rationale']}" for r in train]
            source = str(small_student(out, seed, corpus))
        else:
            source = "smollm2"
        model, tokenizer = load_student(source)
        best, stale = 0.0, 0

        def plateaued(check: dict) -> bool:
            nonlocal best, stale
            best, stale = (check["dev_accuracy"], 0) if check["dev_accuracy"] >= best + 0.01 else (best, stale + 1)
            return stale >= plan.prep_patience or check["calib_chain"] > plan.prep_band[1]

        trace = _gold_sft(model, tokenizer, [(_examples(tokenizer, train), plan.prep_batch)], plan, questions, seed,
                          plan.prep_max_steps, plan.prep_check_every, plan.prep_lr, plateaued, "prepare")
        plateau = _saved(model, tokenizer, out, trace, plateaued=stale >= plan.prep_patience,
                         seconds=time.monotonic() - started)
    if plateau["calibrated"] or plateau["calib_chain"] > plan.prep_band[1] or not plan.prep_calib_steps:
        return plateau
    calibrated = out / ("calibrated-" + _settings(plan, "prep_calib_questions", "prep_calib_share", "prep_calib_steps",
                                                  "prep_calib_check_every", "prep_calib_lr"))
    if (calibrated / "prepared.json").is_file():
        return json.loads((calibrated / "prepared.json").read_text())
    started = time.monotonic()
    calibrated.mkdir(exist_ok=True)
    model, tokenizer = load_student(str(out))
    long = round(plan.prep_batch * plan.prep_calib_share)
    pools = [(_examples(tokenizer, questions["prep_calib"]), long),
             (_examples(tokenizer, questions["prep"]), plan.prep_batch - long)]
    trace = _gold_sft(model, tokenizer, pools, plan, questions, seed, plan.prep_calib_steps,
                      plan.prep_calib_check_every, plan.prep_calib_lr,
                      lambda check: check["calib_chain"] >= plan.prep_band[0], "calibrate")
    for check in trace:
        check["step"] += plateau["steps_run"]
    return _saved(model, tokenizer, calibrated, trace, plateaued=plateau["plateaued"], plateau=plateau,
                  seconds=plateau["seconds"] + time.monotonic() - started)


# -- one arm ---------------------------------------------------------------------------------

def measure(store: Store, checkpoint: ModelCheckpoint, split: str, limit: int, plan: Plan) -> Measure:
    """Greedy answers on the split through `evaluate_accuracy` (stored as eval results), per
    question: right answer, and steps forming a correct chain in a valid order."""
    from ares_train.evaluate import ensure_eval_rationales, eval_questions, evaluate_accuracy

    evaluate_accuracy(store, checkpoint, split=split, limit=limit, max_new_tokens=plan.max_new_tokens, batch_size=128)
    questions = eval_questions(store, split, limit)
    texts = {q: r.text for q, r in ensure_eval_rationales(store, checkpoint, questions,
                                                            max_new_tokens=plan.max_new_tokens).items()}
    return {"accuracy": [float(parse_answer(texts[q.id], len(q.choices)) == q.answer_index) for q in questions],
            "chain": [float(chain_is_correct(q.question, texts[q.id])) for q in questions]}


def spent(store: Store) -> dict[str, float]:
    """What the arm asked of its teacher: distinct requests answered, output tokens of every call."""
    with store.session() as session:
        calls = session.exec(select(func.count(TeacherCall.request_hash.distinct())).where(
            TeacherCall.status == "ok")).one()
        tokens = session.exec(select(func.coalesce(func.sum(TeacherCall.tokens_out), 0))).one()
    return {"teacher_calls": calls, "teacher_tokens_out": tokens}


def samples_of(store: Store, round: int) -> int:
    """Student rollouts the arm sampled in `round` (greedy evaluation rationales have no round)."""
    with store.session() as session:
        return session.exec(select(func.count(Rationale.id)).where(
            Rationale.source == "student", Rationale.round == round)).one()


def trained(stage: Callable[..., ModelCheckpoint], store: Store, round: int, current: ModelCheckpoint,
            **options: Any) -> ModelCheckpoint:
    """`stage`'s checkpoint trained from `current`, or `current` when the round gave it nothing to
    train on (a sparse teacher may correct none of a round's questions): skipped, as `run_loop` does."""
    try:
        return stage(store, round, start=current, **options)
    except ExportError as exc:
        console.print(f"  skipped: {exc}")
        return current


_BEFORE: dict[tuple[str, Path], Measure] = {}  # (student, seed's questions) -> its dev measure


def run_arm(arm: Arm, plan: Plan, seed: int, lrs: dict[str, float], model: str, tasks: Path, home: Path,
            teachers: dict[str, TeacherConfig]) -> dict[str, Any]:
    """The arm on its own store: dev measures after rounds 0 (the prepared student) .. plan.rounds
    (ares: of its RL checkpoint too), samples per round, teacher spend, the final checkpoint."""
    from ares_train.loading import ensure_base_checkpoint
    from ares_train.loop import LoopConfig, run_loop
    from ares_train.ppo_config import PPOConfig
    from ares_train.rollouts import SamplingSettings, generate_rollouts
    from ares_train.stages import checkpoint_name, train_rl, train_sft

    shutil.rmtree(home, ignore_errors=True)  # a re-run measures afresh (the prepared student is kept)
    home.mkdir(parents=True)
    os.environ["ARES_HOME"] = str(home)  # checkpoints and shards of this arm
    store = Store(str(home / "ares.db"))
    try:
        import_jsonl(store, tasks, dataset=DATASET)
        current = ensure_base_checkpoint(store, model)
        if (model, tasks) not in _BEFORE:  # every arm of a seed starts from the same student
            _BEFORE[model, tasks] = measure(store, current, "dev", plan.dev_questions, plan)
        rounds = [{"dev": _BEFORE[model, tasks], "samples": 0}]
        for r in range(1, plan.rounds + 1 if arm.kind != "base" else 1):
            started, row = time.monotonic(), {}
            sampling = dict(max_new_tokens=plan.max_new_tokens, temperature=plan.temperature, batch_size=64)
            if arm.kind == "ares":
                loop = LoopConfig(model=model, teacher=teachers["arith"], rounds=r, seed=seed * 1000,
                                  k=plan.samples // 2, limit=plan.round_questions,
                                  rl=rl_overrides(plan, arm, lrs["rl"]),
                                  sft={**plan.sft, "learning_rate": lrs["sft"]}, **sampling)
                current = run_loop(store, loop, progress=False)
                with store.session() as session:  # the RL checkpoint, measured on its own (none: PPO skipped)
                    rl = session.exec(select(ModelCheckpoint).where(
                        ModelCheckpoint.name == checkpoint_name(r, "rl"))).first()
                row["dev_rl"] = rounds[-1]["dev"] if rl is None else measure(store, rl, "dev", plan.dev_questions,
                                                                              plan)
            else:
                generate_rollouts(store, checkpoint=current, round=r, k=plan.samples, limit=plan.round_questions,
                                  settings=SamplingSettings(seed=seed * 1000 + r, **sampling), progress=False)
                ask = dict(round=r, rationales="student", checkpoint=current.name)
                if arm.kind in ("sft_only", "gold_sft"):
                    asyncio.run(collect_corrections(store, teachers["gold" if arm.kind == "gold_sft" else "arith"],
                                                    **ask))
                    current = trained(train_sft, store, r, current, overrides={**plan.sft, "learning_rate": lrs["sft"]})
                else:
                    scorer = teachers["outcome" if arm.kind == "rl_outcome" else "arith"]
                    asyncio.run(collect_scores(store, scorer, group_by_question=True, **ask))  # as the loop asks
                    config = PPOConfig(**rl_overrides(plan, arm, lrs["rl"]))
                    current = trained(train_rl, store, r, current, config=config)
            rounds.append({"dev": measure(store, current, "dev", plan.dev_questions, plan),
                           "samples": samples_of(store, r), **row})
            console.print(f"  seed {seed} {arm.name} {lrs} round {r}: dev accuracy "
                          f"{statistics.fmean(rounds[-1]['dev']['accuracy']):.3f} ({time.monotonic() - started:.0f} s)")
        return {"rounds": rounds, "checkpoint": current.name, "store": str(home / "ares.db"), **spent(store)}
    finally:
        store.close()


def final_test(run: dict[str, Any], plan: Plan) -> Measure:
    """The test split, once, for a chosen run's final checkpoint."""
    from ares_train.loading import find_checkpoint

    store = Store(run["store"])
    try:
        return measure(store, find_checkpoint(store, run["checkpoint"]), "test", plan.test_questions, plan)
    finally:
        store.close()


def candidates(plan: Plan, arm: Arm, sft_chosen: float | None) -> list[dict[str, float]]:
    """The learning rates an arm is tried at: ares tries the RL grid at sft_only's chosen SFT rate."""
    if arm.kind == "base":
        return [{}]
    if arm.kind in ("sft_only", "gold_sft"):
        return [{"sft": lr} for lr in plan.sft_lrs]
    sft = {"sft": sft_chosen if sft_chosen is not None else plan.sft_lrs[0]} if arm.kind == "ares" else {}
    return [{"rl": lr, **sft} for lr in plan.rl_lrs]


def dev_score(runs: list[dict[str, Any]]) -> tuple[float, float]:
    """Final-round dev (accuracy, right chains), mean over seeds: what a learning rate is chosen by."""
    return (statistics.fmean(statistics.fmean(run["rounds"][-1]["dev"]["accuracy"]) for run in runs),
            statistics.fmean(statistics.fmean(run["rounds"][-1]["dev"]["chain"]) for run in runs))


def tune(arm: Arm, plan: Plan, model: str, tasks: dict[int, Path], home: Path,
         teachers: dict[int, dict[str, TeacherConfig]], sft_chosen: float | None) -> dict[str, Any]:
    """The arm at each candidate learning rate on seed 0's dev split; the best by final dev
    accuracy (then right chains) runs on the other seeds, and only its final checkpoints meet
    the test split."""

    def arm_run(lrs: dict[str, float], seed: int) -> dict[str, Any]:
        where = home / arm.name.replace("/", "-") / "-".join(f"{k}{v}" for k, v in lrs.items())
        return run_arm(arm, plan, seed, lrs, model, tasks[seed], where / f"seed-{seed}", teachers[seed])

    tried = []
    for lrs in candidates(plan, arm, sft_chosen):
        run = arm_run(lrs, 0)
        tried.append((dev_score([run]), lrs, run))
    _, lrs, first = max(tried, key=lambda t: t[0])
    runs = [first] + [arm_run(lrs, seed) for seed in range(1, plan.seeds)]
    return {"lrs": lrs, "dev_by_lr": [{"lrs": t[1], "dev": t[0]} for t in tried],
            "seeds": [{**run, "test": final_test(run, plan)} for run in runs]}


def plan_json(plan: Plan) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(plan)))
