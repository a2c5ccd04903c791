"""ARES effect: does the whole loop improve a student, against simpler arms, with a checkable teacher?

Task: `ares_data.checkable` (chained one-digit arithmetic, the ten digits as options), imported
with `import_jsonl`. Teacher: the fake teacher with a rule judge (`ares_data/judges.py`) on
127.0.0.1, so every score and correction is right by construction and passes through the real
collectors, validation, store and exports. Student: `small` (a random 4-layer Llama, hidden 128,
with a byte-level BPE tokenizer of a few hundred tokens trained on the task's text) or `smollm2`
(the embedded SmolLM2-135M-Instruct); either is first trained on gold rationales of other
questions until it writes the correct chain for 30% of held-out ones (`prepare`), so that it
starts with steps both right and wrong.

Arms, each on its own store, for the same rounds and the same train questions (k rollouts each):

- `base`: no training;
- `sft_only`: generate -> corrections -> SFT on them, each round;
- `outcome_ppo`: generate -> outcome judge (every sentence scores 1.0 when the answer is right,
  else 0.0) -> PPO with `reward_placement=final` (one reward at the end: answer correct or not);
- `ares`: the real loop (`ares_train.loop.run_loop`): sentence-score PPO, then correction SFT;
- `ares_noisy`: `ares` with a teacher that flips a share of its scores (`--noise`).

After every round: greedy test accuracy (`evaluate_accuracy`), the mean judge score of the test
rationales' sentences, the share of test rationales whose steps are the correct chain, and the
teacher calls the arm has spent. Printed: one table (mean and 95% interval over seeds) and,
last, one JSON line with every arm's final test accuracy.

    .venv/bin/python benchmarks/ares_effect.py --quick              # ~4 min on 2 idle cores
    .venv/bin/python benchmarks/ares_effect.py --seeds 3 --rounds 3  # the full run, ~25-40 min
    .venv/bin/python benchmarks/ares_effect.py --student smollm2 --seeds 1 --rounds 2 --questions 16 \
        --k 2 --test 40                                               # SmolLM2 reduced, ~70 min
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table
from sqlmodel import func, select

from ares_data.checkable import DATASET, chain_is_correct, make_tasks, write_records
from ares_data.errors import AresError
from ares_data.fake_teacher import serve_in_thread
from ares_data.formatting import parse_answer, student_prompt
from ares_data.importers import import_jsonl
from ares_data.judges import check, make_judge, problem_of
from ares_data.splitter import split_sentences
from ares_data.store import Store
from ares_data.tables import EvalResult, ModelCheckpoint, TeacherCall
from ares_data.teacher import TeacherConfig, collect_corrections, collect_scores

console = Console()
ARMS = ("base", "sft_only", "outcome_ppo", "ares", "ares_noisy")
METRICS = ("accuracy", "chain", "letter_after_chain", "score", "teacher_calls")
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


@dataclass
class Plan:
    """What one run does; `--quick` and the full run differ only here."""

    student: str = "small"
    seeds: int = 3
    rounds: int = 2
    train_questions: int = 64
    test_questions: int = 100
    k: int = 4
    noise: float = 0.3
    max_new_tokens: int = 48
    temperature: float = 1.0
    prep_questions: int = 5000  # gold rationales the student is prepared on (not the rounds' questions)
    prep_dev: int = 200  # of which held out to decide when the preparation stops
    prep_chain: float = 0.3  # stop the gold-rationale SFT once this share of dev chains is correct
    prep_max_steps: int = 3000
    prep_check_every: int = 25  # the chains go from 0 to 80% right within 100 steps
    prep_batch: int = 32
    prep_lr: float = 1e-3  # all weights
    rl: dict[str, Any] = field(default_factory=lambda: {"batch_size": 16, "mini_batch_size": 8, "max_length": 256})
    sft: dict[str, Any] = field(default_factory=lambda: {"batch_size": 8, "max_length": 256})


QUICK = dict(seeds=1, train_questions=24, test_questions=50, prep_max_steps=1000)
# SmolLM2 is pretrained: a gentler preparation (smaller batches at a lower learning rate, checked
# more often), and LoRA learning rates of the usual size rather than the random small student's.
STUDENTS: dict[str, dict[str, Any]] = {
    "small": dict(rl_lr=1e-3, sft_lr=1e-3),
    "smollm2": dict(rl_lr=1e-4, sft_lr=2e-4, prep_batch=8, prep_lr=5e-5, prep_check_every=10, prep_max_steps=300),
}


# -- the student -----------------------------------------------------------------------------

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


def prepare(plan: Plan, pool: list[dict], seed: int, out: Path) -> dict[str, Any]:
    """The student every arm starts from: trained (all weights, causal-LM loss on the rationale
    only) on the gold rationales of `pool` less its last `plan.prep_dev` questions, until its
    greedy rationales for those held-out ones are the correct chain for `plan.prep_chain` of
    them: a student that writes steps, some right and some wrong, the regime sentence feedback
    is for. The test split is not looked at. Cached in `out`."""
    import torch

    from ares_train.loading import load_student
    from ares_train.prompting import format_prompt

    done = out / "prepared.json"
    if done.is_file():
        return json.loads(done.read_text())
    started = time.monotonic()
    train, dev = pool[: -plan.prep_dev], pool[-plan.prep_dev:]
    if plan.student == "small":  # its tokenizer has no chat template, so it sees format_prompt's plain form
        corpus = [f"{student_prompt(as_question(r))}\nAnswer: {r['rationale']}" for r in train]
        source = str(small_student(out, seed, corpus))
    else:
        source = "smollm2"
    model, tokenizer = load_student(source)
    torch.manual_seed(seed)
    examples = []
    for r in train:
        prompt = tokenizer(format_prompt(tokenizer, student_prompt(as_question(r))), add_special_tokens=False).input_ids
        answer = tokenizer(r["rationale"], add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        examples.append((prompt + answer, [-100] * len(prompt) + answer))
    optimizer = torch.optim.AdamW(model.parameters(), lr=plan.prep_lr)
    generator = torch.Generator().manual_seed(seed)
    step, trace = 0, []
    model.train()
    while step < plan.prep_max_steps and (not trace or trace[-1][2] < plan.prep_chain):
        for _ in range(plan.prep_check_every):
            batch = [examples[i] for i in torch.randint(len(examples), (plan.prep_batch,), generator=generator)]
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
        trace.append((step, *greedy_check(model, tokenizer, dev, plan.max_new_tokens)))
        console.print(f"  prepare seed {seed}: step {step}, loss {loss.item():.3f}, dev accuracy {trace[-1][1]:.2f}, "
                      f"correct chains {trace[-1][2]:.2f}")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    info = {"model": str(out), "steps": step, "dev_accuracy": trace[-1][1], "dev_chain": trace[-1][2], "trace": trace,
            "seconds": time.monotonic() - started}
    done.write_text(json.dumps(info))
    return info


# -- one arm ---------------------------------------------------------------------------------

def measure(store: Store, checkpoint: ModelCheckpoint, plan: Plan) -> dict[str, float]:
    """Greedy test accuracy, mean judge score of the test rationales' sentences, the share of them
    whose steps are exactly the correct chain (then only the letter can be wrong), the share of
    those whose letter is right (does the answer follow the chain?), teacher calls spent."""
    from ares_train.evaluate import ensure_eval_rationales, eval_questions, evaluate_accuracy

    evaluate_accuracy(store, checkpoint, split="test", limit=plan.test_questions,
                      max_new_tokens=plan.max_new_tokens, batch_size=16)
    questions = eval_questions(store, "test", plan.test_questions)
    rationales = ensure_eval_rationales(store, checkpoint, questions, max_new_tokens=plan.max_new_tokens)
    scores, chains, letters = [], [], []
    for q in questions:
        text = rationales[q.id].text
        sentences = [s.text for s in split_sentences(text)]
        checked = check(problem_of(q.question, len(q.choices), q.answer_index), sentences)
        scores.append(statistics.fmean(s for s, _ in checked) if checked else 0.0)
        chains.append(chain_is_correct(q.question, text))
        if chains[-1]:
            letters.append(parse_answer(text, len(q.choices)) == q.answer_index)
    with store.session() as session:
        correct = session.exec(select(EvalResult.correct).where(
            EvalResult.kind == "accuracy", EvalResult.model_checkpoint_id == checkpoint.id)).all()
        calls = session.exec(select(func.count(TeacherCall.request_hash.distinct()))  # a grouped call is one
                             .where(TeacherCall.status == "ok")).one()
    return {"accuracy": statistics.fmean(bool(c) for c in correct), "score": statistics.fmean(scores),
            "chain": statistics.fmean(chains), "letter_after_chain": statistics.fmean(letters) if letters else 0.0,
            "teacher_calls": calls}


def run_arm(arm: str, plan: Plan, seed: int, model: str, tasks: Path, home: Path,
            teachers: dict[str, TeacherConfig]) -> list[dict[str, float]]:
    """The arm's measures after rounds 0 (the prepared student) .. plan.rounds, on its own store."""
    from ares_train.loop import LoopConfig, run_loop
    from ares_train.loading import ensure_base_checkpoint
    from ares_train.ppo_config import PPOConfig
    from ares_train.rollouts import SamplingSettings, generate_rollouts
    from ares_train.stages import train_rl, train_sft

    shutil.rmtree(home, ignore_errors=True)  # a re-run measures afresh (the prepared student is kept)
    home.mkdir(parents=True)
    os.environ["ARES_HOME"] = str(home)  # checkpoints and shards of this arm
    store = Store(str(home / "ares.db"))
    try:
        import_jsonl(store, tasks, dataset=DATASET)
        current = ensure_base_checkpoint(store, model)
        results = [measure(store, current, plan)]
        for round in range(1, plan.rounds + 1):
            started = time.monotonic()
            common = dict(k=plan.k, limit=plan.train_questions, max_new_tokens=plan.max_new_tokens,
                          temperature=plan.temperature, batch_size=16)
            if arm in ("ares", "ares_noisy"):
                loop = LoopConfig(model=model, teacher=teachers[arm], rounds=round, seed=seed * 1000, rl=plan.rl,
                                  sft=plan.sft, **common)
                current = run_loop(store, loop, progress=False)
            elif arm in ("sft_only", "outcome_ppo"):
                settings = SamplingSettings(max_new_tokens=plan.max_new_tokens, temperature=plan.temperature,
                                            seed=seed * 1000 + round, batch_size=16)
                generate_rollouts(store, checkpoint=current, round=round, k=plan.k, limit=plan.train_questions,
                                  settings=settings, progress=False)
                ask = dict(round=round, rationales="student", checkpoint=current.name)
                if arm == "sft_only":
                    asyncio.run(collect_corrections(store, teachers[arm], **ask))
                    current = train_sft(store, round, start=current, overrides=plan.sft)
                else:
                    asyncio.run(collect_scores(store, teachers[arm], group_by_question=True, **ask))  # as the loop
                    current = train_rl(store, round, start=current,
                                       config=PPOConfig(**{**plan.rl, "reward_placement": "final"}))
            results.append(measure(store, current, plan) if arm != "base" else results[-1])
            console.print(f"  seed {seed} {arm} round {round}: accuracy {results[-1]['accuracy']:.3f}, "
                          f"score {results[-1]['score']:.3f} ({time.monotonic() - started:.0f} s)")
        return results
    finally:
        store.close()


# -- summary ---------------------------------------------------------------------------------

def interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (0 with one seed)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, T_975.get(len(values) - 1, 1.96) * statistics.stdev(values) / len(values) ** 0.5


def summarize(runs: dict[str, list[list[dict]]], plan: Plan) -> dict[str, Any]:
    """Per arm and round: mean and 95% half-width of accuracy and score, mean teacher calls."""
    out: dict[str, Any] = {}
    for arm, seeds in runs.items():
        out[arm] = [{metric: interval([s[r][metric] for s in seeds]) for metric in METRICS}
                    for r in range(plan.rounds + 1)]
    return out


def paired(runs: dict[str, list[list[dict]]], against: str = "sft_only") -> dict[str, dict[str, tuple[float, float]]]:
    """Per arm, the last round's accuracy and correct-chain share minus `against`'s, seed by seed
    (mean, 95% half-width): the arms of a seed share its student, so the students' own spread,
    most of the per-arm interval, cancels."""
    if against not in runs:
        return {}
    return {arm: {m: interval([s[-1][m] - a[-1][m] for s, a in zip(seeds, runs[against])])
                  for m in ("accuracy", "chain")} for arm, seeds in runs.items() if arm != against}


def print_table(summary: dict[str, Any], plan: Plan) -> None:
    table = Table(title=f"ARES effect ({plan.student} student, {plan.seeds} seed(s), {plan.train_questions} train "
                        f"questions x k={plan.k}, {plan.test_questions} test questions; mean ± 95% CI over seeds)")
    for column in ("arm", "round", "test accuracy", "correct chain", "right letter after a correct chain",
                   "mean sentence score", "teacher calls"):
        table.add_column(column)
    for arm, rounds in summary.items():
        for r, row in enumerate(rounds):
            table.add_row(arm, str(r), *(f"{row[m][0]:.3f} ± {row[m][1]:.3f}" for m in METRICS[:-1]),
                          f"{row['teacher_calls'][0]:.0f}")
    console.print(table)


def plot(summary: dict[str, Any], path: Path) -> None:
    """Test accuracy and correct-chain share per round per arm (mean, 95% interval as error bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (metric, label) in zip(axes, (("accuracy", "test accuracy"), ("chain", "correct chains (test)"))):
        for n, (arm, rounds) in enumerate(summary.items()):
            xs = [r + (n - 2) * 0.04 for r in range(len(rounds))]
            ax.errorbar(xs, [row[metric][0] for row in rounds], yerr=[row[metric][1] for row in rounds],
                        marker="o", capsize=3, label=arm)
        ax.set_xlabel("round")
        ax.set_ylabel(label)
        ax.set_xticks(range(len(next(iter(summary.values())))))
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(
    student: Annotated[str, typer.Option(help="small: a 4-layer Llama with a task tokenizer; smollm2: the "
                                              "embedded SmolLM2-135M-Instruct; both prepared on gold.")] = "small",
    quick: Annotated[bool, typer.Option(help="One seed, fewer questions (~4 min on 2 cores).")] = False,
    seeds: Annotated[Optional[int], typer.Option(min=1, help="Seeds (default 3; 1 with --quick).")] = None,
    rounds: Annotated[Optional[int], typer.Option(min=1, help="ARES rounds per arm (default 2).")] = None,
    noise: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of scores the noisy teacher flips.")] = 0.3,
    questions: Annotated[Optional[int], typer.Option(min=1, help="Train questions per round (default 64; 24 "
                                                                 "with --quick).")] = None,
    test: Annotated[Optional[int], typer.Option(min=1, help="Test questions (default 100; 50 with --quick).")] = None,
    k: Annotated[int, typer.Option(min=1, help="Rollouts per question.")] = 4,
    rl_lr: Annotated[Optional[float], typer.Option(min=0, help="PPO learning rate (outcome_ppo and ares alike; "
                                                               "default 1e-3 small, 1e-4 smollm2).")] = None,
    kl_coef: Annotated[float, typer.Option(min=0, help="PPO per-token KL penalty.")] = 1e-4,
    ppo_epochs: Annotated[int, typer.Option(min=1, help="PPO passes over each batch.")] = 2,
    is_cap: Annotated[float, typer.Option(min=0, help="PPO's truncated importance weight to the sampler "
                                                      "(behaviour_is_cap; 0: off).")] = 2.0,
    advantage: Annotated[str, typer.Option(help="PPO's advantage estimator for outcome_ppo and the ares arms: gae "
                                                "(a critic) or grpo (critic-free; sentence GRPO in the ares arms, "
                                                "outcome GRPO in outcome_ppo). rloo takes outcome rewards only, "
                                                "so it is not offered here.")] = "gae",
    sft_lr: Annotated[Optional[float], typer.Option(min=0, help="Correction-SFT learning rate (sft_only and ares; "
                                                                "default 1e-3 small, 2e-4 smollm2).")] = None,
    sft_epochs: Annotated[float, typer.Option(min=0, help="Correction-SFT passes over the round's shard.")] = 1.0,
    prep_steps: Annotated[Optional[int], typer.Option(min=1, help="Most gold-SFT steps preparing the student (default "
                                                                  "3000 small, 300 smollm2; 1000 --quick).")] = None,
    work: Annotated[Path, typer.Option(help="Stores, checkpoints and the prepared students.")] = Path(
        ".ares-bench/ares_effect"),
    plot_to: Annotated[Optional[Path], typer.Option("--plot", help="Write the accuracy plot (PNG) here.")] = None,
    arms: Annotated[str, typer.Option(help="Comma-separated arms to run (a sweep needs only some).")] = ",".join(ARMS),
) -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    if student not in STUDENTS:
        raise typer.BadParameter(f"--student is one of {', '.join(STUDENTS)}")
    if advantage not in ("gae", "grpo"):
        raise typer.BadParameter("--advantage is gae or grpo")
    defaults = dict(STUDENTS[student])
    default_rl_lr, default_sft_lr = defaults.pop("rl_lr"), defaults.pop("sft_lr")
    rl_lr, sft_lr = default_rl_lr if rl_lr is None else rl_lr, default_sft_lr if sft_lr is None else sft_lr
    plan = replace(Plan(student=student, noise=noise), **{**defaults, **(QUICK if quick else {})})
    steps = prep_steps or plan.prep_max_steps
    plan = replace(plan, seeds=seeds or plan.seeds, rounds=rounds or plan.rounds, k=k, prep_max_steps=steps,
                   train_questions=questions or plan.train_questions, test_questions=test or plan.test_questions,
                   prep_check_every=min(plan.prep_check_every, steps))
    plan.rl.update(learning_rate=rl_lr, kl_coef=kl_coef, ppo_epochs=ppo_epochs, behaviour_is_cap=is_cap,
                   advantage=advantage)
    plan.sft.update(learning_rate=sft_lr, num_train_epochs=sft_epochs)
    chosen = [arm for arm in ARMS if arm in arms.split(",")]
    if not chosen or set(arms.split(",")) - set(ARMS):
        raise typer.BadParameter(f"--arms takes a comma-separated subset of {','.join(ARMS)}")
    work = work.resolve() / f"{student}-q{plan.train_questions}-t{plan.test_questions}"  # the prepared students
    arms_dir = work / "rl-{learning_rate}-{kl_coef}-{ppo_epochs}-is{behaviour_is_cap}{grpo}".format(
        **plan.rl, grpo="-grpo" if advantage == "grpo" else "") \
        / "sft-{learning_rate}-{num_train_epochs}".format(**plan.sft) / f"k{plan.k}-r{plan.rounds}-n{plan.noise}"
    work.mkdir(parents=True, exist_ok=True)
    records = make_tasks(plan.train_questions + plan.prep_questions, plan.test_questions, seed=0)
    train, test = [r for r in records if r["split"] == "train"], [r for r in records if r["split"] == "test"]
    tasks = work / "arith.jsonl"  # what the arms import: the rounds' train questions and the test split
    write_records(tasks, train[: plan.train_questions] + test)
    started = time.monotonic()
    runs: dict[str, list[list[dict]]] = {arm: [] for arm in chosen}
    prepared = []
    for seed in range(plan.seeds):
        info = prepare(plan, train[plan.train_questions:], seed,
                       work / f"student-{seed}-s{plan.prep_max_steps}")  # cached per seed and step budget
        prepared.append(info)
        console.print(f"seed {seed}: student ready after {info['steps']} gold SFT steps "
                      f"({info['seconds']:.0f} s), dev accuracy {info['dev_accuracy']:.2f}, "
                      f"correct chains {info['dev_chain']:.2f}")
        with serve_in_thread(judge=make_judge("arith")) as arith, \
                serve_in_thread(judge=make_judge("outcome")) as outcome, \
                serve_in_thread(judge=make_judge("arith", plan.noise, seed)) as noisy:
            urls = {"sft_only": arith, "ares": arith, "outcome_ppo": outcome, "ares_noisy": noisy, "base": arith}
            teachers = {arm: TeacherConfig.from_options(base_url=url, model=f"rule-{arm}", rpm=60000, timeout=30)
                        for arm, url in urls.items()}
            for arm in chosen:
                home = arms_dir / f"seed-{seed}" / arm
                runs[arm].append(run_arm(arm, plan, seed, info["model"], tasks, home, teachers))
    summary, differences = summarize(runs, plan), paired(runs)
    print_table(summary, plan)
    for arm, diff in differences.items():
        console.print(f"{arm} - sft_only, last round, paired by seed: accuracy {diff['accuracy'][0]:+.3f} ± "
                      f"{diff['accuracy'][1]:.3f}, correct chains {diff['chain'][0]:+.3f} ± {diff['chain'][1]:.3f}")
    if plot_to:
        plot(summary, plot_to)
        console.print(f"plot: {plot_to}")
    calls = {arm: rounds[-1]["teacher_calls"][0] for arm, rounds in summary.items()}
    final = {arm: round(rounds[-1]["accuracy"][0], 4) for arm, rounds in summary.items()}
    print(json.dumps({**final, "ci95": {arm: round(r[-1]["accuracy"][1], 4) for arm, r in summary.items()},
                      "score": {arm: round(r[-1]["score"][0], 4) for arm, r in summary.items()},
                      "chain": {arm: round(r[-1]["chain"][0], 4) for arm, r in summary.items()},
                      "per_round": {arm: {m: [[round(v, 4) for v in row[m]] for row in r] for m in METRICS}
                                    for arm, r in summary.items()},
                      "vs_sft_only": {arm: {m: [round(v, 4) for v in d[m]] for m in d}
                                      for arm, d in differences.items()},
                      "teacher_calls": calls,
                      "prepared": [{k: p[k] for k in ("steps", "dev_accuracy", "dev_chain")} for p in prepared],
                      "plan": asdict(plan), "minutes": round((time.monotonic() - started) / 60, 1),
                      "cpu_minutes": round(time.process_time() / 60, 1)}))


if __name__ == "__main__":
    try:
        typer.run(main)
    except AresError as exc:
        raise SystemExit(f"error: {exc}") from exc
