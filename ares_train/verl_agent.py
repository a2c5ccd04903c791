"""The `ares_single_turn` agent loop: dense sentence rewards and one grouped teacher call per prompt on
verl 0.9.1's v1 trainer (`trainer.use_v1=true`), without forking verl.

verl's v1 trainer takes `rm_scores` from each agent loop output's `as_dict()` (as
`token_level_scores`, before the KL penalty and GAE). Its own output puts the reward loop's scalar
on the last token; ours rebuilds `rm_scores` as the dense per-token tensor from the placed
(token, score - neutral) pairs the reward loop returns beside its scalar (`ares_placed`, a JSON
string in `reward_extra_info`), and drops that payload. `as_dict` is experimental in verl 0.9.1
(`verl.experimental.agent_loop`, docs/verl.md).

verl's v1 worker (`AgentLoopWorkerTQ._run_prompt`) runs a prompt's n samples as n agent loops in
one process; each waits here for its siblings, and the group goes to one reward worker (chosen by
the prompt's uid) as one batch, so the teacher gets one grouped call per prompt. Because the
loop sets the reward itself, verl's per-sample reward call (`_compute_score`, a random worker per
sample) is skipped.
"""

from __future__ import annotations

import asyncio
import functools
import json
import zlib
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
from verl import DataProto
from verl.experimental.agent_loop.agent_loop import AgentLoopOutput, register
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop

from ares_data.errors import TrainingError

from .verl_advantage import ESTIMATOR
from .verl_reward import GROUP_KEY, PLACED_KEY, VerlRewardSettings

AGENT_LOOP = "ares_single_turn"
AGENT_LOOP_TARGET = "ares_train.verl_agent.AresSingleTurnAgentLoop"


def dense_rewards(placed: str, length: int) -> list[float]:
    """The per-token reward of one response from the reward loop's placed pairs (`[[token, reward], ...]`)."""
    out = [0.0] * length
    for position, reward in json.loads(placed):
        out[position] += reward
    return out


class AresAgentLoopOutput(AgentLoopOutput):
    """An agent loop output whose `rm_scores` is the dense sentence reward, not the sum on the last token."""

    token_rewards: Optional[list[float]] = None

    def as_dict(self) -> dict[str, Any]:
        out = super().as_dict()
        dense = out.pop("token_rewards", None)
        if dense is not None:
            out["rm_scores"] = torch.tensor(dense, dtype=torch.float32)
        return out


@functools.cache
def _named_actor(name: str) -> Any:
    import ray

    return ray.get_actor(name)


def reward_worker(config: Any, uid: str) -> Any:
    """The reward-loop worker (a named Ray actor started by verl's RewardLoopManager) that scores the
    prompt `uid`: always the same one for a prompt, spread evenly over `reward.num_workers`."""
    return _named_actor(f"reward_loop_worker_{zlib.crc32(uid.encode()) % int(config.reward.num_workers)}")


@dataclass
class _Group:
    """The n samples of one prompt: scored together once the last one is generated."""

    expected: int
    arrived: dict[int, tuple[AgentLoopOutput, dict]] = field(default_factory=dict)
    withdrawn: int = 0
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    @property
    def complete(self) -> bool:
        return len(self.arrived) + self.withdrawn >= self.expected


_groups: dict[str, _Group] = {}


def _objects(values: list) -> np.ndarray:
    """A 1-d object array of `values`, also when they are equal-length lists (numpy would stack those)."""
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value
    return out


def group_batch(members: list[tuple[int, AgentLoopOutput, dict]]) -> DataProto:
    """One prompt's samples as the DataProto verl's reward worker takes: prompts left-padded, responses
    right-padded, the dataset's fields, and `session_id` (each sample's index within its prompt)."""
    prompt_width = max(len(o.prompt_ids) for _, o, _ in members)
    response_width = max(max(len(o.response_ids) for _, o, _ in members), 1)
    prompts, responses, attention = [], [], []
    for _, output, _ in members:
        p, r = output.prompt_ids, output.response_ids
        prompts.append([0] * (prompt_width - len(p)) + list(p))
        responses.append(list(r) + [0] * (response_width - len(r)))
        attention.append([0] * (prompt_width - len(p)) + [1] * (len(p) + len(r)) + [0] * (response_width - len(r)))
    keys = [k for k in members[0][2] if k not in ("raw_prompt", "multi_modal_data", "tools_kwargs")]
    non_tensors = {k: _objects([kwargs[k] for _, _, kwargs in members]) for k in keys}
    non_tensors["session_id"] = np.array([session for session, _, _ in members])
    non_tensors[GROUP_KEY] = np.array([len(members)] * len(members))
    prompts_t, responses_t = torch.tensor(prompts), torch.tensor(responses)
    return DataProto.from_dict(
        tensors={"prompts": prompts_t, "responses": responses_t, "attention_mask": torch.tensor(attention),
                 "input_ids": torch.cat([prompts_t, responses_t], 1)},
        non_tensors=non_tensors)


@register(AGENT_LOOP)
class AresSingleTurnAgentLoop(SingleTurnAgentLoop):
    """verl's single-turn loop, rewarded per sentence by the teacher, a prompt's samples in one call."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.settings = VerlRewardSettings.from_verl(self.config)

    def _expected(self, kwargs: dict) -> int:
        """How many samples the prompt has: `rollout.n` when training, `val_kwargs.n` when validating
        (a question of another split than the training one)."""
        split = (kwargs.get("extra_info") or {}).get("split")
        validating = split is not None and split != self.settings.train_split
        return int(self.rollout_config.val_kwargs.n if validating else self.rollout_config.n)

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        uid, session = str(kwargs["uid"]), int(kwargs.get("session_id", 0))
        group = _groups.setdefault(uid, _Group(self._expected(kwargs)))
        try:
            output = await super().run(sampling_params, **kwargs)
        except BaseException:
            group.withdrawn += 1
            self._flush_if_complete(uid, group)
            raise
        group.arrived[session] = (output, kwargs)
        self._flush_if_complete(uid, group)
        results: dict[int, dict] = await asyncio.shield(group.done)
        return self._rewarded(output, results[session])

    def _flush_if_complete(self, uid: str, group: _Group) -> None:
        if group.complete and _groups.get(uid) is group:
            del _groups[uid]
            asyncio.ensure_future(self._score(uid, group))

    async def _score(self, uid: str, group: _Group) -> None:
        """One batch for the whole group, to the prompt's reward worker; its answer wakes every sample."""
        members = [(session, output, kwargs) for session, (output, kwargs) in sorted(group.arrived.items())]
        try:
            if not members:
                group.done.set_result({})
                return
            results = await reward_worker(self.config, uid).compute_score_batch.remote(group_batch(members))
            group.done.set_result({session: r for (session, _, _), r in zip(members, results, strict=True)})
        except Exception as exc:  # noqa: BLE001 - every sample of the group raises it in verl's worker
            group.done.set_exception(exc)

    @staticmethod
    def _rewarded(output: AgentLoopOutput, result: dict) -> AresAgentLoopOutput:
        """The output with the reward loop's scalar (verl's metrics), the dense tensor for training, and
        the reward extra info without the placed payload."""
        info = dict(result["reward_extra_info"])
        placed = info.pop(PLACED_KEY)
        output.extra_fields["reward_extra_info"] = info
        fields = {name: getattr(output, name) for name in output.model_fields_set - {"reward_score"}}
        return AresAgentLoopOutput(**fields, reward_score=result["reward_score"],
                                   token_rewards=dense_rewards(placed, len(output.response_ids)))


def check_config(config: Any) -> None:
    """Refuse, in one line, a composed config on which the sentence rewards would not reach the advantage
    densely: the legacy trainer (it keeps only the reward loop's scalar, on the last token), another
    agent loop, a reward model (verl's workers would score with it), or `ares_sentence_grpo` with the
    KL penalty in the reward (every token would look like a sentence end)."""
    from omegaconf import OmegaConf

    agent = config.actor_rollout_ref.rollout.agent
    if not config.trainer.use_v1:
        raise TrainingError("trainer.use_v1=false: verl's legacy trainer puts the sum of a response's sentence "
                            "rewards on its last token; ARES needs the v1 trainer (trainer.use_v1=true)")
    if agent.default_agent_loop != AGENT_LOOP:
        raise TrainingError(f"actor_rollout_ref.rollout.agent.default_agent_loop={agent.default_agent_loop}: the "
                            f"dense sentence rewards need {AGENT_LOOP} (run_verl.sh sets it)")
    if agent.get("agent_loop_manager_class"):
        raise TrainingError(f"actor_rollout_ref.rollout.agent.agent_loop_manager_class="
                            f"{agent.agent_loop_manager_class}: ARES runs on verl's own AgentLoopManagerTQ")
    loops = OmegaConf.load(agent.agent_loop_config_path) if agent.agent_loop_config_path else []
    if not any(loop.get("name") == AGENT_LOOP and loop.get("_target_") == AGENT_LOOP_TARGET for loop in loops):
        raise TrainingError(f"actor_rollout_ref.rollout.agent.agent_loop_config_path="
                            f"{agent.agent_loop_config_path}: no {AGENT_LOOP} entry for {AGENT_LOOP_TARGET}")
    if config.algorithm.adv_estimator == ESTIMATOR and config.algorithm.use_kl_in_reward:
        raise TrainingError(f"algorithm.adv_estimator={ESTIMATOR} with algorithm.use_kl_in_reward=true: the KL "
                            "penalty would put a reward on every token; set algorithm.use_kl_in_reward=false "
                            "actor_rollout_ref.actor.use_kl_loss=true (GRPO's KL term in the loss)")
    if config.reward.reward_model.enable:
        raise TrainingError("reward.reward_model.enable=true: verl's reward workers would score with that model "
                            "instead of the teacher (and sum the rewards on the last token)")
