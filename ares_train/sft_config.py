"""Settings of the SFT stage (`sft_trainer.py`): LoRA on the teacher-corrected rationales.

Each field's help text is written once, in its metadata (the same convention as `ppo_config.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields


def _f(default, help: str):  # `help`: the dataclass-metadata convention
    return field(default=default, metadata={"help": help})


@dataclass
class SFTRunConfig:
    # -- optimisation ---------------------------------------------------------------------
    learning_rate: float = _f(2e-4, "AdamW learning rate of the LoRA adapter (LoRA wants ~10x full fine-tuning's).")
    num_train_epochs: float = _f(3.0, "Passes over the shard.")
    batch_size: int = _f(8, "Examples per device per step.")
    gradient_accumulation_steps: int = _f(1, "Steps whose gradients are summed before an update.")
    seed: int = _f(42, "Seed for adapter init and data order.")
    # -- LoRA -----------------------------------------------------------------------------
    lora_r: int = _f(8, "LoRA rank.")
    lora_alpha: int = _f(16, "LoRA scaling numerator.")
    lora_dropout: float = _f(0.05, "Dropout on the LoRA input.")
    lora_target_modules: str = _f("all-linear", "Modules that get LoRA (PEFT syntax).")
    lora_vision: bool = _f(False, "On a vision-language student, `all-linear` covers the vision tower too.")
    # -- data -----------------------------------------------------------------------------
    max_length: int = _f(1024, "Prompt + completion tokens; longer examples are cut.")
    logging_steps: int = _f(1, "Optimizer steps between logged metrics.")

    @classmethod
    def help(cls) -> dict[str, str]:
        """Field name -> help text (for CLIs and docs)."""
        return {f.name: f.metadata["help"] for f in fields(cls)}
