"""`ares export verl`: the questions as verl's RL dataset (train.parquet, val.parquet),
`run_verl.sh`, the command that trains on them with online sentence rewards through verl's
main_ppo (`ares_train/verl_main.py`, docs/verl.md), and `agent_loops.yaml`, which tells verl's
agent-loop workers where the `ares_single_turn` loop lives. Written through the exporters' own
`write_shard`, so the export row, manifest and hashes are those of every shard.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from pathlib import Path

from sqlmodel import select

from .errors import ExportError
from .exporters import query_text, write_shard
from .formatting import letter, student_prompt
from .review.labels import flagged_questions
from .store import Store, redact
from .tables import Export, Question

VERL_FILES = ("train.parquet", "val.parquet")
VERL_SCRIPT = "run_verl.sh"
AGENT_LOOPS = "agent_loops.yaml"
# verl's agent-loop workers instantiate the loop from this file (ares_train/verl_agent.py); ares_data
# names it without importing ares_train.
AGENT_LOOPS_YAML = """# The ARES agent loop (ares_train/verl_agent.py): dense sentence rewards, one call per prompt.
- name: ares_single_turn
  _target_: ares_train.verl_agent.AresSingleTurnAgentLoop
"""


def _verl_row(question: Question, index: int) -> dict:
    """One prompt in verl's RL dataset layout; the reward manager finds the question by `question_id`."""
    return {
        "data_source": f"ares/{question.dataset}",
        "prompt": [{"role": "user", "content": student_prompt(question)}],
        "ability": "reasoning",
        "reward_model": {"style": "rule", "ground_truth": letter(question.answer_index)
                         if question.answer_index is not None else ""},
        "extra_info": {"split": question.split, "index": index, "question_id": question.id},
    }


def export_verl(store: Store, round: int, out_dir: str | Path | None = None, model: str | None = None,
                train_split: str = "train", val_split: str = "val") -> Export:
    """The questions as verl's RL dataset (train.parquet, val.parquet) and `run_verl.sh`, the
    `verl.trainer.main_ppo` command that trains on them with online sentence rewards
    (ares_train/verl_reward.py) recording its responses as round `round`. Flagged questions and
    questions with an image (verl's text path) are left out. Without `val_split` questions the
    `test` split validates."""
    query = select(Question).where(Question.split.in_([train_split, val_split, "test"])).order_by(Question.id)
    with store.session() as session:
        questions = session.exec(query).all()
        flagged = flagged_questions(session)
    skipped: Counter = Counter()
    by_split: dict[str, list[dict]] = defaultdict(list)
    for question in questions:
        reason = "flagged_bad" if question.id in flagged else "image_question" if question.image_path else None
        if reason:
            skipped[reason] += 1
            continue
        rows = by_split[question.split]
        rows.append(_verl_row(question, len(rows)))
    val = by_split[val_split] or by_split["test"]
    if by_split[train_split] and not val:
        raise ExportError(f"no {val_split!r} or 'test' questions to validate on (verl needs data.val_files)")
    train = by_split[train_split]
    student = model or "HuggingFaceTB/SmolLM2-135M-Instruct"
    export = write_shard(store, "verl", round, train + val, skipped, [query_text(store, query)], out_dir,
                    files=dict(zip(VERL_FILES, (train, val))), model=student, train_split=train_split,
                    val_split=val_split if by_split[val_split] else "test")
    (Path(export.path) / AGENT_LOOPS).write_text(AGENT_LOOPS_YAML)
    script = Path(export.path) / VERL_SCRIPT
    script.write_text(verl_script(store, round, student, f"ares-round-{round}", train_split))
    script.chmod(0o755)
    return export


def verl_script(store: Store, round: int, model: str, run: str, train_split: str = "train") -> str:
    """`run_verl.sh`: verl's v1 PPO trainer with GAE, a critic and LoRA on the exported files, each
    sample rewarded per sentence through the `ares_single_turn` agent loop and the `ares_sentence`
    reward loop. `ares_train.verl_main` adds the offline PPO's method (gamma, lambda, KL, clips,
    LoRA, neutral) in front of these overrides. The interpreter is this one unless PYTHON says
    otherwise. The store URL is written only when it holds no password; teacher keys are never
    written (the reward workers read them from the environment)."""
    safe = redact(store.url) == store.url
    db = f'export ARES_DB="${{ARES_DB:-{store.url}}}"' if safe else \
        ': "${ARES_DB:?set ARES_DB to the store URL (it holds a password, so it is not written here)}"'
    return f"""#!/usr/bin/env bash
# ARES on verl (docs/verl.md): verl's v1 PPO trainer with GAE, a critic and LoRA, the offline PPO's
# method (ares_train/ppo_config.py). The ares_single_turn agent loop sends each prompt's samples to
# the ares_sentence reward loop together (one grouped teacher call), records every response as a
# student rationale of round {round} (checkpoint "{run}") and rewards each sentence's last token.
# Written by `ares export verl --round {round}`.
# Arguments pass through as Hydra overrides: `bash run_verl.sh --cfg job` prints the composed
# config without running anything; `trainer.n_gpus_per_node=8 trainer.nnodes=2` scales out.
# The teacher: ARES_TEACHER_CONFIG / OPENAI_BASE_URL / ARES_TEACHER_MODEL and its key variable, in the
# environment of every Ray node, or `+reward.reward_kwargs.ares.teacher.model=...` overrides.
set -euo pipefail
HERE="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
MODEL="${{ARES_VERL_MODEL:-{model}}}"
{db}
# ARES_ADVANTAGE=grpo: critic-free sentence GRPO (ares_sentence_grpo), the KL as a loss term.
case "${{ARES_ADVANTAGE:-gae}}" in
  gae) ADVANTAGE=(algorithm.adv_estimator=gae algorithm.use_kl_in_reward=true) ;;
  grpo) ADVANTAGE=(algorithm.adv_estimator=ares_sentence_grpo algorithm.use_kl_in_reward=false
                   actor_rollout_ref.actor.use_kl_loss=true actor_rollout_ref.actor.kl_loss_type=low_var_kl) ;;
  *) echo "run_verl.sh: ARES_ADVANTAGE is gae or grpo, not $ARES_ADVANTAGE" >&2; exit 1 ;;
esac
exec "${{PYTHON:-{sys.executable}}}" -m ares_train.verl_main \\
  trainer.use_v1=true \\
  actor_rollout_ref.rollout.agent.default_agent_loop=ares_single_turn \\
  actor_rollout_ref.rollout.agent.agent_loop_config_path="$HERE/{AGENT_LOOPS}" \\
  "${{ADVANTAGE[@]}}" \\
  data.train_files="$HERE/{VERL_FILES[0]}" \\
  data.val_files="$HERE/{VERL_FILES[1]}" \\
  data.train_batch_size=16 \\
  data.max_prompt_length=512 \\
  data.max_response_length=256 \\
  data.filter_overlong_prompts=true \\
  actor_rollout_ref.model.path="$MODEL" \\
  actor_rollout_ref.actor.optim.lr=1e-5 \\
  actor_rollout_ref.actor.ppo_mini_batch_size=16 \\
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4 \\
  actor_rollout_ref.rollout.name=vllm \\
  actor_rollout_ref.rollout.n=4 \\
  actor_rollout_ref.rollout.tensor_model_parallel_size=1 \\
  actor_rollout_ref.rollout.gpu_memory_utilization=0.4 \\
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8 \\
  actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8 \\
  critic.model.path="$MODEL" \\
  critic.optim.lr=1e-5 \\
  critic.ppo_micro_batch_size_per_gpu=4 \\
  reward.reward_manager.source=importlib \\
  reward.reward_manager.name=AresSentenceRewardLoop \\
  reward.reward_manager.module.path=pkg://ares_train.verl_reward \\
  +reward.reward_kwargs.ares.run={run} \\
  +reward.reward_kwargs.ares.round={round} \\
  +reward.reward_kwargs.ares.base_model="$MODEL" \\
  +reward.reward_kwargs.ares.train_split={train_split} \\
  trainer.n_gpus_per_node=1 \\
  trainer.nnodes=1 \\
  trainer.total_epochs=1 \\
  trainer.logger=console \\
  trainer.project_name=ares \\
  trainer.experiment_name={run} \\
  "$@"
"""
