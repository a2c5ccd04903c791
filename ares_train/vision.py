"""Vision-language students: what differs from a text-only one, in one module.

A VLM student is loaded as (model, processor) instead of (model, tokenizer); every stage
passes that second element on unchanged and asks this module for what it needs:

- `student_input`: the prompt text (the question's image placed where the processor's chat
  template puts it) and the image, checked against the store by `ares_data.images`;
- `encode`: token ids plus the processor's image tensors (pixel_values, grid sizes, ...);
- `text_tokenizer`: the tokenizer inside a processor, for padding, decoding and offsets;
- `lora_targets`: LoRA on the language model only, unless the vision tower is asked for.

A question without an image, or whose file is missing, goes through as text only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from ares_data.images import question_image

from .prompting import format_prompt, prompt_ids

# Module-name parts of the image side of common VLMs (LLaVA, SmolVLM/Idefics, Qwen-VL, PaliGemma).
VISION_PARTS = ("vision", "visual", "multi_modal_projector", "connector", "image_newline", "mm_projector")
TEXT_KEYS = ("input_ids", "attention_mask")


def is_vision_language(directory: str | Path) -> bool:
    """True when the model directory's config has a vision tower."""
    from transformers import AutoConfig

    return getattr(AutoConfig.from_pretrained(directory), "vision_config", None) is not None


def is_processor(processing: Any) -> bool:
    from transformers import ProcessorMixin

    return isinstance(processing, ProcessorMixin)


def text_tokenizer(processing: Any) -> Any:
    """The tokenizer of a processor, or the tokenizer itself."""
    return processing.tokenizer if is_processor(processing) else processing


def image_prompt(processor: Any, user_text: str) -> str:
    """The user turn with the image first, through the processor's chat template when it has one."""
    if getattr(processor, "chat_template", None):
        content = [{"type": "image"}, {"type": "text", "text": user_text}]
        return processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                             add_generation_prompt=True)
    return f"{processor.image_token}\n{user_text}\nAnswer: "


def student_input(processing: Any, user_text: str, question: Any = None) -> tuple[str, Any]:
    """(prompt text, PIL image or None): the image only for a VLM and a question with a readable file.

    `question` is a Question row, an exported row (`image`, `image_sha256` keys) or None."""
    image = question_image(question) if question is not None and is_processor(processing) else None
    if image is None:
        return format_prompt(text_tokenizer(processing), user_text), None
    return image_prompt(processing, user_text), image.open()


def encode(processing: Any, prompts: Sequence[str], images: Sequence[Any] | None = None, **kwargs: Any) -> Any:
    """Tokenised prompts (padded as the tokenizer is set) plus image tensors for the rows that have one."""
    images = list(images or [None] * len(prompts))
    if not any(img is not None for img in images):
        tok = text_tokenizer(processing)
        return tok.pad({"input_ids": [prompt_ids(tok, p) for p in prompts]}, **{"padding": False, **kwargs})
    return processing(text=list(prompts), images=[[img] if img is not None else [] for img in images],
                      add_special_tokens=False, **kwargs)


def image_tensors(encoded: Mapping[str, Any]) -> dict[str, Any]:
    """What a processor adds beyond the text ids (pixel_values, image sizes, ...)."""
    return {k: v for k, v in encoded.items() if k not in TEXT_KEYS}


def lora_targets(model: Any, configured: str | list[str], lora_vision: bool) -> str | list[str]:
    """`configured`, except that `all-linear` on a VLM means the language model's linear layers
    (not the vision tower or projector, not the output head) unless `lora_vision`."""
    import torch

    if configured != "all-linear" or lora_vision or getattr(model.config, "vision_config", None) is None:
        return configured
    output = model.get_output_embeddings()
    return sorted(name for name, module in model.named_modules()
                  if isinstance(module, torch.nn.Linear) and module is not output
                  and not any(part in name for part in VISION_PARTS))
