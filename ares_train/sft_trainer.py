"""SFT on corrected rationales: TRL's `SFTTrainer` with a fresh LoRA adapter.

Rows are prompt-completion pairs, so TRL computes the loss on the completion only. The
prompt is formatted with `format_prompt`, exactly as the student sees it when generating.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from .prompting import format_prompt
from .sft_config import SFTRunConfig


def train_sft_adapter(config: SFTRunConfig, model: Any, tokenizer: Any, rows: Iterable[dict],
                      output_dir: str | Path) -> dict[str, Any]:
    """Train a LoRA adapter on `rows` ({prompt: user text, completion}), save it (PEFT format)
    to `output_dir`, and return the metrics: the trainer's summary and its per-step log."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    dataset = Dataset.from_list([
        {"prompt": format_prompt(tokenizer, row["prompt"]), "completion": row["completion"]} for row in rows
    ])
    args = SFTConfig(
        output_dir=str(output_dir), learning_rate=config.learning_rate, num_train_epochs=config.num_train_epochs,
        per_device_train_batch_size=config.batch_size, gradient_accumulation_steps=config.gradient_accumulation_steps,
        seed=config.seed, max_length=config.max_length, logging_steps=config.logging_steps,
        completion_only_loss=True, activation_checkpointing=False, save_strategy="no", report_to=[],
        push_to_hub=False, disable_tqdm=True, dataloader_pin_memory=torch.cuda.is_available(),
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
    )
    peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                             target_modules=config.lora_target_modules, task_type="CAUSAL_LM")
    tokenizer.padding_side = "right"  # training pads on the right; generation switches back
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config)
    result = trainer.train()
    trainer.save_model(str(output_dir))
    return {"summary": result.metrics, "steps": [e for e in trainer.state.log_history if "loss" in e]}
