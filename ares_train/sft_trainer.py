"""SFT on corrected rationales: TRL's `SFTTrainer` with a fresh LoRA adapter.

Rows are prompt-completion pairs, so TRL computes the loss on the completion only. The
prompt is formatted with `format_prompt`, exactly as the student sees it when generating.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .placement import placement_of
from .sft_config import SFTRunConfig
from .vision import is_processor, lora_targets, student_input, text_tokenizer


def _no_checkpointing(config_cls: type) -> dict[str, bool]:
    """Activation checkpointing off, under the name this transformers uses: `activation_checkpointing`
    from 5.11 on, `gradient_checkpointing` before (the `[verl]` extra pins transformers below 5.11)."""
    from dataclasses import fields

    names = {f.name for f in fields(config_cls)}
    key = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return {key: False}


def train_sft_adapter(config: SFTRunConfig, model: Any, tokenizer: Any, rows: Iterable[dict],
                      output_dir: str | Path, questions: Mapping[int, Any] | None = None,
                      callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train a LoRA adapter on `rows` ({prompt: user text, completion}), save it (PEFT format)
    to `output_dir`, and return the metrics: the trainer's summary and its per-step log.

    A VLM student (`tokenizer` is its processor) also sees the image of each row's question
    (`questions` by `question_id`); TRL's vision collator then builds the pixel inputs.
    `callbacks` are transformers `TrainerCallback`s (the GPU check times steps with one)."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    vlm, questions = is_processor(tokenizer), questions or {}
    where = placement_of(model)  # the Trainer keeps the model where the stage loaded it
    examples = []
    for row in rows:
        prompt, image = student_input(tokenizer, row["prompt"], questions.get(row.get("question_id")))
        examples.append({"prompt": prompt, "completion": row["completion"],
                         **({"images": [image] if image is not None else []} if vlm else {})})
    dataset = Dataset.from_list(examples)
    args = SFTConfig(
        output_dir=str(output_dir), learning_rate=config.learning_rate, num_train_epochs=config.num_train_epochs,
        per_device_train_batch_size=config.batch_size, gradient_accumulation_steps=config.gradient_accumulation_steps,
        seed=config.seed, max_length=config.max_length, logging_steps=config.logging_steps,
        completion_only_loss=True, save_strategy="no", report_to=config.report_to, run_name=Path(output_dir).name,
        **_no_checkpointing(SFTConfig),
        push_to_hub=False, disable_tqdm=True, dataloader_pin_memory=where.on_cuda, use_cpu=not where.on_cuda,
        bf16=where.dtype == "bfloat16", fp16=where.dtype == "float16" and where.on_cuda,
    )
    peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                             target_modules=lora_targets(model, config.lora_target_modules, config.lora_vision),
                             task_type="CAUSAL_LM")
    text_tokenizer(tokenizer).padding_side = "right"  # training pads on the right; generation switches back
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=list(callbacks))
    trainer.remove_callback(PrinterCallback)  # it prints each log dict to stdout; the caller's bar shows them
    result = trainer.train()
    trainer.save_model(str(output_dir))
    return {"summary": result.metrics, "steps": [e for e in trainer.state.log_history if "loss" in e]}
