"""verl 0.9.1's v1 agent-loop worker in this process (no Ray, no GPU), for tests/test_verl_agent.py and
benchmarks/verl_reward.py.

verl's own code runs: `AgentLoopWorkerTQ._run_prompt` (a prompt's n agent loops), the
`ares_single_turn` loop, `RewardLoopWorker` with `ares_sentence`, `as_dict`. What Ray and the GPUs
would provide is stood in for: the LLM server (`FakeServer`), the reward workers' actor handles
(`InProcessActor`, the same routing by uid), and TransferQueue, whose puts are captured.
"""

from __future__ import annotations

import asyncio
import zlib
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator
from unittest import mock

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from verl.experimental.agent_loop.agent_loop import AgentLoopWorker, get_trajectory_info
from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
from verl.trainer.ppo.v1 import agent_loop_tq
from verl.workers.rollout.replica import TokenOutput

from ares_data.verl_export import AGENT_LOOPS_YAML
from ares_train import verl_agent
from ares_train.ppo_config import PPOConfig
from ares_train.verl_main import method_overrides


def verl_config(model_dir: Path | str, loops_dir: Path, *, n: int, reward_workers: int, teacher: dict | None = None,
                store: str | None = None) -> Any:
    """verl's ppo_trainer config with what run_verl.sh and verl_main set (SGLang: vLLM is not installed)."""
    loops = Path(loops_dir) / "agent_loops.yaml"
    loops.write_text(AGENT_LOOPS_YAML)
    with initialize_config_module("verl.trainer.config", version_base=None):
        cfg = compose("ppo_trainer", overrides=method_overrides(PPOConfig()) + [
            "trainer.use_v1=true", f"actor_rollout_ref.model.path={model_dir}",
            "actor_rollout_ref.rollout.agent.default_agent_loop=ares_single_turn",
            f"actor_rollout_ref.rollout.agent.agent_loop_config_path={loops}", f"actor_rollout_ref.rollout.n={n}",
            "actor_rollout_ref.rollout.name=sglang", "reward.reward_manager.source=importlib",
            "reward.reward_manager.name=AresSentenceRewardLoop",
            "reward.reward_manager.module.path=pkg://ares_train.verl_reward", f"reward.num_workers={reward_workers}",
            "+reward.reward_kwargs.ares.run=verl-test"])
    OmegaConf.set_struct(cfg, False)
    if teacher is not None:
        cfg.reward.reward_kwargs.ares.teacher = teacher
    if store is not None:
        cfg.reward.reward_kwargs.ares.store = store
    return cfg


class FakeServer:
    """verl's LLM server client: generate call k answers texts[k % len(texts)] (ending in EOS), after a
    delay that makes a prompt's samples finish out of order; `fail_on` makes that call raise."""

    def __init__(self, tokenizer: Any, texts: list[str], fail_on: int | None = None):
        self.tokenizer, self.texts, self.fail_on, self.calls = tokenizer, texts, fail_on, 0

    async def generate(self, request_id: str, prompt_ids: list[int], sampling_params: dict, **_: Any) -> TokenOutput:
        call, self.calls = self.calls, self.calls + 1
        await asyncio.sleep(0.01 * (call % 3))
        if call == self.fail_on:
            raise RuntimeError("server lost")
        ids = self.tokenizer(self.texts[call % len(self.texts)], add_special_tokens=False).input_ids
        return TokenOutput(token_ids=ids + [self.tokenizer.eos_token_id])


class InProcessActor:
    """A Ray actor handle (`handle.method.remote(...)`, awaited) for an object in this process."""

    def __init__(self, target: Any):
        self.target = target

    def __getattr__(self, name: str) -> Any:
        return SimpleNamespace(remote=getattr(self.target, name))


def agent_worker(cfg: Any) -> Any:
    """verl's AgentLoopWorkerTQ (the class Ray would start) built here, without its TransferQueue client."""
    cls = agent_loop_tq.AgentLoopWorkerTQ.__ray_metadata__.modified_class
    worker = cls.__new__(cls)
    AgentLoopWorker.__init__(worker, cfg, llm_client=None)
    worker.background_tasks = set()
    return worker


@contextmanager
def streaming(cfg: Any) -> Iterator[SimpleNamespace]:
    """`reward.num_workers` RewardLoopWorkers in this process behind `verl_agent.reward_worker`'s routing,
    and TransferQueue's puts captured: `rows` by key (`{uid}_{session}_{index}`), `routed` (uid, worker)."""
    workers = [RewardLoopWorker(cfg) for _ in range(int(cfg.reward.num_workers))]
    seen = SimpleNamespace(rows={}, routed=[])

    def route(config: Any, uid: str) -> InProcessActor:
        index = zlib.crc32(uid.encode()) % len(workers)
        seen.routed.append((uid, index))
        return InProcessActor(workers[index])

    async def put(keys: list[str], fields: Any, tags: list[dict], partition_id: str) -> None:
        for i, key in enumerate(keys):
            seen.rows[key] = {"fields": fields[i], "tag": tags[i], "partition": partition_id}

    async def put_status(**_: Any) -> None:
        pass

    with mock.patch.object(verl_agent, "reward_worker", route), \
            mock.patch.object(agent_loop_tq.tq, "async_kv_batch_put", put), \
            mock.patch.object(agent_loop_tq.tq, "async_kv_put", put_status):
        yield seen
    for worker in workers:
        worker.reward_manager.rewarder.close()


def run_prompts(worker: Any, question_ids: list[int], *, splits: list[str] | None = None, validate: bool = False,
                step: int = 3) -> None:
    """verl's `_run_prompt` for one prompt per question, all at once, as the v1 worker starts them."""
    splits = splits or ["train"] * len(question_ids)

    async def go() -> None:
        trajectories = await get_trajectory_info(step, list(range(len(question_ids))), validate)
        prompts = [{"raw_prompt": [{"role": "user", "content": f"Question {q}?"}], "uid": f"uid-{q}", "index": i,
                    "global_steps": step, "agent_name": "ares_single_turn", "data_source": "ares/test",
                    "extra_info": {"split": split, "index": i, "question_id": q}}
                   for i, (q, split) in enumerate(zip(question_ids, splits))]
        await asyncio.wait_for(asyncio.gather(*(worker._run_prompt(p, {"temperature": 1.0}, t)
                                                for p, t in zip(prompts, trajectories))), 120)

    asyncio.run(go())
