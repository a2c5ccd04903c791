"""Online sentence rewards inside verl: every new response is recorded, scored by the teacher, rewarded per sentence.

In verl's PPO the actor writes new text every step, so the rewards cannot come from an export:
for each batch the manager decodes each response once, records it as a student rationale
(round = verl's global step unless the run sets one, checkpoint = the run's name, the question's
split in `generation`), asks the teacher through the project's collector (`collect`: rate limits,
retries, validation, one grouped call per prompt, the request-hash cache, every call in the store)
and places `score - neutral` on the token of verl's own ids that ends each sentence. A response
whose scores failed gets no score reward and is counted in the extra info (`ares_failed`).

verl 0.9.1 has two reward-manager interfaces, and this module registers `ares_sentence` in both:

- the reward loop (`verl.experimental.reward_loop.reward_manager`), which main_ppo's reward
  workers run: `run_single` per sample, returning the sum of the sentence rewards (verl's
  metrics) and the placed (token, reward) pairs as a JSON string (`ares_placed`) from which the
  `ares_single_turn` agent loop (`verl_agent.py`) rebuilds the dense `rm_scores`. A sample that
  did not come through that loop (verl's legacy trainer, another agent loop, a colocated reward
  model) is refused: verl would keep only the sum, on the last token.
- the batch interface (`verl.workers.reward_manager`, `__call__(data, return_dict)`), which
  returns the dense [batch, response_length] tensor; 0.9.1's main_ppo no longer calls it, the
  tests use it as the reference.

Settings come from verl's config (`+reward.reward_kwargs.ares.*`, see `VerlRewardSettings`)
and the environment (ARES_DB, ARES_TEACHER_CONFIG, the teacher's key variable); keys only ever
from the environment.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any, Optional, Sequence

import torch
from sqlmodel import select

from ares_data.enums import CheckpointStage, RationaleSource
from ares_data.errors import TrainingError
from ares_data.formatting import parse_answer
from ares_data.tables import Question, Sentence, SentenceScore, TeacherCall
from ares_data.store import Store, redact
from ares_data.teacher import TeacherConfig
from ares_data.teacher.collect import CollectRequest, collect

from .ppo_math import score_rewards
from .sentence_tokens import decoded_spans, sentence_end_tokens

try:  # verl is the `[verl]` extra; without it the core below still imports (offline PPO needs none of it)
    from verl.experimental.reward_loop.reward_manager import register as register_loop
    from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
    from verl.workers.reward_manager import register as register_batch
    from verl.workers.reward_manager.abstract import AbstractRewardManager
except ImportError:  # pragma: no cover - exercised only where verl is not installed
    register_loop = register_batch = None  # type: ignore[assignment]
    RewardManagerBase = AbstractRewardManager = object  # type: ignore[assignment,misc]

REGISTERED_NAME = "ares_sentence"
PLACED_KEY = "ares_placed"  # reward_extra_info: the placed (token, reward) pairs, JSON; the agent loop drops it
GROUP_KEY = "ares_group"  # non-tensor field the agent loop sets: the sample came with its prompt's group
# Each batch's time and calls: Ray forwards a reward worker's stderr to the driver's console.
logger = logging.getLogger("ares.verl")
logger.setLevel(os.environ.get("ARES_VERL_LOG_LEVEL", "INFO"))
if not logging.getLogger().handlers:
    logger.addHandler(logging.StreamHandler())


@dataclass
class VerlRewardSettings:
    """What the manager needs beside verl's batch; `reward.reward_kwargs.ares` in verl's config."""

    store: Optional[str] = None  # store URL (PostgreSQL for a cluster); None = ARES_DB / the default store
    run: str = "verl"  # the checkpoint name the responses are recorded under
    base_model: str = ""  # recorded on that checkpoint row
    round: Optional[int] = None  # None = verl's global step
    teacher_config: Optional[str] = None  # a teacher config file; None = ARES_TEACHER_CONFIG
    teacher: dict = field(default_factory=dict)  # TeacherConfig fields: provider, model, base_url, rpm, ...
    neutral: float = 0.5
    group_by_question: bool = True
    max_cost: Optional[float] = None  # per batch
    window_s: float = 0.05  # reward loop: how long the first sample waits for the rest of its batch
    train_split: str = "train"  # questions of another split are validation (verl's val.parquet)
    score_validation: bool = True  # False: validation responses get no teacher call, no record, reward 0

    @classmethod
    def from_mapping(cls, values: Any) -> "VerlRewardSettings":
        values = dict(values or {})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise TrainingError(f"reward_kwargs.ares: unknown setting(s) {', '.join(sorted(unknown))}")
        if "teacher" in values:
            values["teacher"] = dict(values["teacher"] or {})
        return cls(**values)

    @classmethod
    def from_verl(cls, config: Any) -> "VerlRewardSettings":
        """From verl's config: `reward.reward_kwargs.ares`, where verl's DAPO manager reads its own settings."""
        from omegaconf import OmegaConf

        kwargs = config.reward.get("reward_kwargs") or {}
        ares = kwargs.get("ares") if kwargs else None
        return cls.from_mapping(OmegaConf.to_container(ares, resolve=True) if ares is not None else {})


@dataclass
class Sample:
    """One response of verl's batch: its prompt's question, verl's token ids, and where it sits."""

    question_id: int
    response_ids: list[int]
    key: str  # unique within the run: global step, prompt uid, sample index
    step: int
    sample_index: int
    split: str = ""  # the question's split (`extra_info.split`)


@dataclass
class Placed:
    """The teacher's verdict on one sample: the token ending each sentence and that sentence's score."""

    positions: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    failed: bool = False  # no (complete) scores: the sample gets no score reward
    unaligned: bool = False  # verl's ids could not be mapped to characters

    def extra(self) -> dict[str, Any]:
        return {"ares_failed": int(self.failed), "ares_unaligned": int(self.unaligned),
                "ares_sentences": len(self.scores)}


def samples_of(data: Any) -> list[tuple[Sample, int]]:
    """(Sample, valid response length) for each row of a DataProto, as verl builds it: prompts
    left-padded, responses right-padded, `extra_info.question_id` from `ares export verl`, and
    `uid` / `session_id` / `global_steps` when the trainer adds them."""
    responses = data.batch["responses"]
    prompt_len = data.batch["prompts"].shape[-1]
    lengths = data.batch["attention_mask"][:, prompt_len:].sum(-1).tolist()
    extra = data.non_tensor_batch
    seen: Counter = Counter()
    out = []
    for i, length in enumerate(lengths):
        info = extra["extra_info"][i] if "extra_info" in extra else None
        if not info or info.get("question_id") is None:
            raise TrainingError(f"verl batch row {i}: extra_info has no question_id (write the data with "
                                "`ares export verl`)")
        step = int(extra["global_steps"][i]) if "global_steps" in extra else int(data.meta_info.get("global_steps", 0))
        uid = str(extra["uid"][i]) if "uid" in extra else f"q{info['question_id']}"
        index = int(extra["session_id"][i]) if "session_id" in extra else seen[uid]
        seen[uid] += 1
        ids = responses[i, :int(length)].tolist()
        out.append((Sample(int(info["question_id"]), ids, f"{step}:{uid}:{index}", step, index,
                           str(info.get("split", ""))), int(length)))
    return out


class SentenceRewarder:
    """Records a batch's responses, has the teacher score them, and places the scores on tokens."""

    def __init__(self, tokenizer: Any, settings: VerlRewardSettings):
        self.tokenizer, self.settings = tokenizer, settings
        self.store = Store(settings.store)
        self.teacher = TeacherConfig.from_options(settings.teacher_config, **settings.teacher)
        self._checkpoint_id: Optional[int] = None

    def _checkpoint(self, session: Any) -> int:
        if self._checkpoint_id is None:
            row = self.store.register_checkpoint(session, name=self.settings.run, path=self.settings.run,
                                                 base_model=self.settings.base_model, stage=CheckpointStage.rl,
                                                 meta={"engine": "verl"})
            self._checkpoint_id = row.id
        assert self._checkpoint_id is not None  # flushed: the database gave it
        return self._checkpoint_id

    def record(self, samples: Sequence[Sample]) -> list[tuple[int, int, list[tuple[int, int]]]]:
        """Store each response as a student rationale: (rationale id, characters stripped in front, spans)."""
        decoded = [decoded_spans(self.tokenizer, s.response_ids) for s in samples]
        out = []
        with self.store.session() as session:
            checkpoint = self._checkpoint(session)
            choices = {q.id: len(q.choices) for q in session.exec(
                select(Question).where(Question.id.in_({s.question_id for s in samples})))}
            for sample, (text, spans) in zip(samples, decoded, strict=True):
                if sample.question_id not in choices:
                    raise TrainingError(f"question {sample.question_id} of verl's batch is not in the store "
                                        f"{redact(self.store.url)}")
                stripped = text.strip()
                round = self.settings.round if self.settings.round is not None else sample.step
                digest = hashlib.sha1(repr(sample.response_ids).encode()).hexdigest()[:12]
                row, _ = self.store.add_rationale(
                    session, question_id=sample.question_id, source=RationaleSource.student, text=stripped,
                    dedup_key=f"verl:{self.settings.run}:{round}:{sample.key}:{digest}",
                    model_checkpoint_id=checkpoint, round=round, sample_index=sample.sample_index,
                    predicted_answer=parse_answer(stripped, choices[sample.question_id]),
                    generation={"engine": "verl", "global_step": sample.step, "split": sample.split},
                )
                assert row.id is not None  # flushed: the database gave it
                out.append((row.id, len(text) - len(text.lstrip()), spans))
        return out

    def _scores(self, rationale_ids: list[int]) -> dict[int, list[tuple[int, float | None]]]:
        """Per rationale, (end character, this teacher's latest score or None) of each sentence. A
        score row only ever holds a validated score, also under a partly invalid grouped call
        (db/migrations/0012), so the call's status does not matter."""
        with self.store.session() as session:
            sentences = session.exec(select(Sentence).where(Sentence.rationale_id.in_(rationale_ids))
                                     .order_by(Sentence.rationale_id, Sentence.idx)).all()
            scored = session.exec(
                select(SentenceScore.sentence_id, SentenceScore.score).join(TeacherCall)
                .where(SentenceScore.sentence_id.in_([s.id for s in sentences]),
                       TeacherCall.model == self.teacher.model).order_by(TeacherCall.id)).all()
        latest = dict(scored)
        out: dict[int, list[tuple[int, float | None]]] = {r: [] for r in rationale_ids}
        for s in sentences:
            out[s.rationale_id].append((s.end_char, latest.get(s.id)))
        return out

    async def score(self, samples: Sequence[Sample]) -> list[Placed]:
        """The teacher's reward of each sample; the batch's calls run concurrently."""
        started = time.monotonic()
        recorded = self.record(samples)
        ids = [rid for rid, _, _ in recorded]
        request = CollectRequest("score", grouped=self.settings.group_by_question, max_cost=self.settings.max_cost,
                                 only=tuple(ids))
        summary = await collect(self.store, self.teacher, request)
        by_rationale = self._scores(ids)
        placed = [self._place(by_rationale[rid], shift, spans) for rid, shift, spans in recorded]
        logger.info("ares_sentence: %d responses in %.2fs; teacher calls %d sent, %d from the store; "
                    "%d without scores, %d unaligned", len(samples), time.monotonic() - started, summary.calls,
                    summary.reused, sum(p.failed for p in placed), sum(p.unaligned for p in placed))
        return placed

    def _place(self, sentences: list[tuple[int, float | None]], shift: int,
               spans: list[tuple[int, int]]) -> Placed:
        if not sentences or any(score is None for _, score in sentences):
            return Placed(failed=True)
        try:
            positions = sentence_end_tokens(spans, [end + shift for end, _ in sentences])
        except ValueError:
            return Placed(failed=True, unaligned=True)
        return Placed(positions, [float(score) for _, score in sentences])

    def close(self) -> None:
        self.store.close()


def run_sync(coro: Any) -> Any:
    """Run `coro` to the end from synchronous code, also where an event loop already runs (a Ray actor)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = exc

    worker = threading.Thread(target=target)
    worker.start()
    worker.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


class AresSentenceRewardManager(AbstractRewardManager):
    """verl's batch interface: `__call__(data, return_dict)` returns the dense [batch, response] rewards."""

    def __init__(self, tokenizer: Any, num_examine: int = 0, compute_score: Any = None,
                 reward_fn_key: str = "data_source", **reward_kwargs: Any):
        # compute_score / reward_fn_key belong to verl's interface; the teacher gives the scores.
        self.num_examine = num_examine
        self.rewarder = SentenceRewarder(tokenizer, VerlRewardSettings.from_mapping(reward_kwargs.get("ares",
                                                                                                      reward_kwargs)))

    def __call__(self, data: Any, return_dict: bool = False) -> torch.Tensor | dict[str, Any]:
        rows = samples_of(data)
        placed = run_sync(self.rewarder.score([sample for sample, _ in rows]))
        mask = data.batch["attention_mask"][:, data.batch["prompts"].shape[-1]:]
        reward = score_rewards([p.positions for p in placed], [p.scores for p in placed], mask,
                               self.rewarder.settings.neutral, "sentence")
        for sample, p in list(zip(rows, placed))[:self.num_examine]:
            print("[ares response]", sample[0].key, "[scores]", p.scores)
        if not return_dict:
            return reward
        extra = {key: [p.extra()[key] for p in placed] for key in Placed().extra()}
        return {"reward_tensor": reward, "reward_extra_info": extra}


class AresSentenceRewardLoop(RewardManagerBase):
    """verl's reward loop (what main_ppo's reward workers run): `run_single` per sample, scored in batches.

    The `ares_single_turn` agent loop sends a prompt's samples together (`compute_score_batch`);
    the samples a worker receives within `window_s` of each other go to the teacher as one batch,
    one grouped call per prompt. Each answer holds the sum of the sentence rewards (verl's
    metrics) and the placed pairs (`ares_placed`) the agent loop turns into the dense `rm_scores`.
    """

    def __init__(self, config: Any, tokenizer: Any, compute_score: Any = None, reward_router_address: Any = None,
                 reward_model_tokenizer: Any = None):
        super().__init__(config, tokenizer, compute_score)
        self.rewarder = SentenceRewarder(tokenizer, VerlRewardSettings.from_verl(config))
        self._waiting: list[tuple[Sample, asyncio.Future]] = []
        self._flush: Optional[asyncio.Task] = None

    @classmethod
    def assemble_rm_scores(cls, data: Any, scores: list[float]) -> torch.Tensor:
        """verl's colocated reward path: it would put each sum on the last token. Refused."""
        raise TrainingError("verl asked ares_sentence for one score per response (a colocated reward model): "
                            "that sums the sentence rewards on the last token; run through run_verl.sh")

    async def run_single(self, data: Any) -> dict:
        if GROUP_KEY not in data.non_tensor_batch:
            raise TrainingError("ares_sentence got a sample outside the ares_single_turn agent loop: verl would "
                                "put the sum of its sentence rewards on the last token (run through run_verl.sh: "
                                "trainer.use_v1=true, default_agent_loop=ares_single_turn)")
        [(sample, _)] = samples_of(data[-1:])  # a multi-turn output: its last sequence
        settings = self.rewarder.settings
        if sample.split != settings.train_split and not settings.score_validation:
            placed = Placed()
        else:
            answer = asyncio.get_running_loop().create_future()
            self._waiting.append((sample, answer))
            if self._flush is None:
                self._flush = asyncio.ensure_future(self._score_waiting())
            placed = await answer
        rewards = [score - settings.neutral for score in placed.scores]
        return {"reward_score": sum(rewards), "reward_extra_info": {
            **placed.extra(), PLACED_KEY: json.dumps([[p, r] for p, r in zip(placed.positions, rewards)])}}

    async def _score_waiting(self) -> None:
        await asyncio.sleep(self.rewarder.settings.window_s)
        waiting, self._waiting, self._flush = self._waiting, [], None
        try:
            placed = await self.rewarder.score([sample for sample, _ in waiting])
        except Exception as exc:  # noqa: BLE001 - every waiting sample raises it in verl's worker
            for _, answer in waiting:
                answer.set_exception(exc)
            return
        for (_, answer), p in zip(waiting, placed, strict=True):
            answer.set_result(p)


if register_batch is not None:
    register_batch(REGISTERED_NAME)(AresSentenceRewardManager)
    register_loop(REGISTERED_NAME)(AresSentenceRewardLoop)
    # verl's TaskRunner imports this module (the reward manager's) before it computes advantages.
    from .verl_advantage import register_sentence_grpo

    register_sentence_grpo()
