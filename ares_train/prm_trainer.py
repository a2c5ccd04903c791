"""`ares train prm`: distil the store's sentence scores into a process reward model.

The teacher's fully scored rationales (`ares_data.prm_data`) are split by question into
training and validation sets (every rationale of a question on one side, so validation
measures questions the PRM never saw). A LoRA adapter on the backbone and the score head
(`prm_model.py`) are trained with mean squared error against the teacher's scores at the
sentence ends. Validation mean absolute error and Spearman correlation against the teacher are
measured before training (epoch 0: the head predicts the mean training score) and after each
epoch, and kept in `training_run.metrics`; the result is registered as checkpoint `prm-N`
(stage `prm`) on top of the backbone's checkpoint.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import torch

from ares_data.enums import RunKind
from ares_data.errors import TrainingError
from ares_data.evaluation import spearman
from ares_data.prm_data import LabelledRationale, labelled_rationales
from ares_data.store import Store
from ares_data.tables import ModelCheckpoint

from .placement import placement_of
from .prm_config import PRMConfig
from .progress import LOSS_HEADLINE, step_reporter
from .prm_model import Encoded, ScoreHead, decoder_of, encode, hidden_size, predict, save_prm
from .stages import run_stage
from .tracking import StepLog, check_report_to


def split_by_question(items: Sequence[LabelledRationale], fraction: float, seed: int) -> tuple[list, list]:
    """(train, validation): a `fraction` of the questions, drawn with `seed`, holds out all their rationales."""
    questions = sorted({item.question_id for item in items})
    random.Random(seed).shuffle(questions)
    n_val = max(1, round(fraction * len(questions))) if fraction > 0 and len(questions) > 1 else 0
    held = set(questions[:n_val])
    return [i for i in items if i.question_id not in held], [i for i in items if i.question_id in held]


class PRMTrainer:
    """The training loop: AdamW over the LoRA adapter and the head, one optimizer step per batch."""

    def __init__(self, config: PRMConfig, lm: Any, tokenizer: Any, prior: float):
        from peft import LoraConfig, get_peft_model

        self.config, self.tokenizer = config, tokenizer
        self.device = torch.device(placement_of(lm).device)  # where run_stage placed it (config.device/dtype)
        torch.manual_seed(config.seed)
        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=config.lora_target_modules, bias="none")
        self.lm = get_peft_model(lm, lora)
        self.decoder = decoder_of(self.lm)
        self.head = ScoreHead(hidden_size(lm), prior).to(self.device)
        params = [p for p in self.lm.parameters() if p.requires_grad] + list(self.head.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=config.learning_rate)

    def encode(self, items: Sequence[LabelledRationale]) -> list[tuple[Encoded, list[float]]]:
        """Each item's tokens and the scores of the sentences that fit in `max_length`."""
        out = []
        for item in items:
            e = encode(self.tokenizer, item.prompt, item.text, item.ends, self.config.max_length)
            if e.positions:
                out.append((e, item.scores[:len(e.positions)]))
        return out

    def _batches(self, data: list, shuffle: random.Random | None) -> list[list]:
        order = list(range(len(data)))
        if shuffle is not None:
            shuffle.shuffle(order)
        size = self.config.batch_size
        return [[data[i] for i in order[s:s + size]] for s in range(0, len(order), size)]

    def evaluate(self, data: list[tuple[Encoded, list[float]]]) -> dict[str, Any]:
        """Mean absolute error and Spearman of the PRM's scores against the teacher's."""
        if not data:
            return {"sentences": 0, "mae": None, "spearman": None}
        self.lm.eval()
        predicted, wanted = [], []
        with torch.inference_mode():
            for batch in self._batches(data, None):
                out = predict(self.decoder, self.head, [e for e, _ in batch], self.tokenizer.pad_token_id, self.device)
                predicted += [float(v) for t in out for v in t.tolist()]
                wanted += [s for _, scores in batch for s in scores]
        mae = sum(abs(p - w) for p, w in zip(predicted, wanted)) / len(wanted)
        return {"sentences": len(wanted), "mae": mae, "spearman": spearman(predicted, wanted)}

    def train(self, train: list, validation: list, on_step: StepLog | None = None) -> dict[str, Any]:
        """Epochs over `train`, validated before and after each; `on_step` gets each step's metrics."""
        rng = random.Random(self.config.seed)
        epochs = [{"epoch": 0, **{f"val_{k}": v for k, v in self.evaluate(validation).items()}}]
        steps = []
        for epoch in range(1, self.config.num_train_epochs + 1):
            self.lm.train()
            for batch in self._batches(train, rng):
                out = predict(self.decoder, self.head, [e for e, _ in batch], self.tokenizer.pad_token_id, self.device)
                target = torch.tensor([s for _, scores in batch for s in scores], device=self.device)
                loss = torch.nn.functional.mse_loss(torch.cat(out), target)
                loss.backward()
                self.optimizer.step()
                self.optimizer.zero_grad()
                steps.append({"epoch": epoch, "step": len(steps) + 1, "loss": float(loss.detach())})
                if on_step is not None:
                    on_step(steps[-1])
            epochs.append({"epoch": epoch, **{f"val_{k}": v for k, v in self.evaluate(validation).items()}})
        return {"steps": steps, "epochs": epochs}


def next_prm_name(store: Store) -> str:
    from sqlmodel import select

    with store.session() as session:
        taken = set(session.exec(select(ModelCheckpoint.name).where(ModelCheckpoint.name.like("prm-%"))))
    return next(f"prm-{n}" for n in range(1, len(taken) + 2) if f"prm-{n}" not in taken)


def train_prm(store: Store, start: ModelCheckpoint, *, config: PRMConfig | None = None, teacher: str | None = None,
              sources: Sequence[str] = ("gold", "student"), rounds: Sequence[int] | None = None,
              output_dir: str | Path | None = None, name: str | None = None, progress: bool = True) -> ModelCheckpoint:
    """Train a PRM on `start` (the backbone) from `teacher`'s scores; register it as `name` (prm-N).
    `progress`: draw the step bar on stderr."""
    from ares_data.paths import ares_home

    config = config or PRMConfig()
    check_report_to(config.report_to)
    items, skipped, teacher = labelled_rationales(store, teacher=teacher, sources=sources, rounds=rounds)
    train_items, val_items = split_by_question(items, config.validation_fraction, config.seed)
    if not train_items:
        raise TrainingError(f"no rationale fully scored by {teacher} to train a PRM on "
                            f"(sources {', '.join(sources)}; left out: {dict(skipped) or 'none'})")
    name = name or next_prm_name(store)
    output = Path(output_dir or ares_home() / "checkpoints" / name).resolve()
    data = {"teacher": teacher, "sources": list(sources), "rounds": list(rounds) if rounds else None,
            "train_rationales": len(train_items), "validation_rationales": len(val_items),
            "validation_questions": sorted({i.question_id for i in val_items}), "skipped": dict(skipped)}

    def train(lm: Any, tokenizer: Any, out: Path) -> dict:
        scores = [s for item in train_items for s in item.scores]
        trainer = PRMTrainer(config, lm, tokenizer, prior=sum(scores) / len(scores))
        encoded_train, encoded_val = trainer.encode(train_items), trainer.encode(val_items)
        total = config.num_train_epochs * math.ceil(len(encoded_train) / config.batch_size)
        with step_reporter("PRM", total, LOSS_HEADLINE, report_to=config.report_to, output_dir=out,
                           config=asdict(config), enabled=progress) as on_step:
            result = trainer.train(encoded_train, encoded_val, on_step=on_step)
        save_prm(trainer.lm, trainer.head, out, {**asdict(config), "teacher": teacher, "base_model": start.base_model,
                                                 "start_checkpoint": start.name, "objective": "regression"})
        first, last = result["epochs"][0], result["epochs"][-1]
        summary = {"val_mae_before": first["val_mae"], "val_mae": last["val_mae"], "val_spearman": last["val_spearman"],
                   "val_sentences": last["val_sentences"], "steps": len(result["steps"]),
                   **placement_of(trainer.lm).describe()}
        return {**result, "data": data, "summary": summary}

    return run_stage(store, stage=RunKind.prm, round=None, start=start, export=None, output_dir=output, config=config,
                     train=train, name=name, run_config={"teacher": teacher, "sources": list(sources),
                                                         "rounds": list(rounds) if rounds else None})
