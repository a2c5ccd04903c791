"""Settings of the SFT stage (`sft_trainer.py`): LoRA on the teacher-corrected rationales.

Each field's help text is written once, in its metadata (`options.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .options import option
from .placement import DEVICE_HELP, DTYPE_HELP, DtypeName
from .tracking import REPORT_TO_HELP, ReportTo


@dataclass
class SFTRunConfig:
    # -- optimisation ---------------------------------------------------------------------
    learning_rate: float = option(2e-4, "AdamW learning rate of the LoRA adapter (LoRA wants ~10x full fine-tuning's).")
    num_train_epochs: float = option(3.0, "Passes over the shard.")
    batch_size: int = option(8, "Examples per device per step.")
    gradient_accumulation_steps: int = option(1, "Steps whose gradients are summed before an update.")
    seed: int = option(42, "Seed for adapter init and data order.")
    # -- LoRA -----------------------------------------------------------------------------
    lora_r: int = option(8, "LoRA rank.")
    lora_alpha: int = option(16, "LoRA scaling numerator.")
    lora_dropout: float = option(0.05, "Dropout on the LoRA input.")
    lora_target_modules: str = option("all-linear", "Modules that get LoRA (PEFT syntax).")
    lora_vision: bool = option(False, "On a vision-language student, `all-linear` covers the vision tower too.")
    # -- data -----------------------------------------------------------------------------
    max_length: int = option(1024, "Prompt + completion tokens; longer examples are cut.")
    logging_steps: int = option(1, "Optimizer steps between logged metrics.")
    # -- placement ------------------------------------------------------------------------
    device: str = option("auto", DEVICE_HELP)
    dtype: DtypeName = option("auto", DTYPE_HELP)
    # -- logging ------------------------------------------------------------------------
    report_to: ReportTo = option("none", REPORT_TO_HELP)
