"""Vision-language students: what differs from a text-only one, in one module.

A VLM student is loaded as (model, processor) instead of (model, tokenizer); every stage
passes that second element on unchanged and asks this module for what it needs:

- `student_input`: the prompt text (the question's image placed where the processor's chat
  template puts it) and the image, checked against the store by `ares_data.images`;
- `encode`: token ids plus the processor's image tensors (pixel_values, grid sizes, ...);
- `concat_images`: those tensors of several prompts as one batch's model inputs;
- `model_positions`: the Qwen-VL family's 3-D (M-RoPE) position ids, built by the model's
  own `get_rope_index` from `image_grid_thw` (other models count attended tokens, 1-D);
- `text_tokenizer`: the tokenizer inside a processor, for padding, decoding and offsets;
- `lora_targets`: LoRA on the language model only, unless the vision tower is asked for.

A question without an image, or whose file is missing, goes through as text only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from ares_data.errors import TrainingError
from ares_data.images import question_image

from .prompting import format_prompt, prompt_ids

# Module-name parts of the image side of common VLMs (LLaVA, SmolVLM/Idefics, Qwen-VL, PaliGemma).
VISION_PARTS = ("vision", "visual", "multi_modal_projector", "connector", "image_newline", "mm_projector")
# Token-aligned outputs of a processor; everything else is an image tensor. Qwen-VL processors
# mark image tokens in `mm_token_type_ids`, rebuilt from the ids where positions need it.
TEXT_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids")


def is_vision_language(directory: str | Path) -> bool:
    """True when the model directory's config has a vision tower."""
    from transformers import AutoConfig

    return getattr(AutoConfig.from_pretrained(directory), "vision_config", None) is not None


def load_processor(directory: str | Path) -> Any:
    """The model's processor. Transformers builds Qwen2-VL's and LLaVA-OneVision's with a video
    processor, which needs torchvision, and 5.10 files Idefics3's PIL image processor under
    torchvision too: without it, say so instead of transformers' own error."""
    from transformers import AutoProcessor
    from transformers.utils import is_torchvision_available

    try:
        return AutoProcessor.from_pretrained(directory)
    except (OSError, ValueError, ImportError, AttributeError, TypeError) as exc:
        if is_torchvision_available():
            raise
        raise TrainingError(f"cannot load the processor of {directory}: transformers needs torchvision for its "
                            "video or image processor; install the torchvision build that matches your torch") from exc


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


def concat_images(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The image tensors of several prompts (one `image_tensors` dict each, empty when text only)
    as one batch's inputs: concatenated in row order, as their image tokens appear, each padded
    with zeros to the largest (tiles or patches per image vary; zero tiles are padding to
    Idefics3 and beyond `image_sizes` to LLaVA-OneVision, as in the processors' own batches)."""
    import torch
    import torch.nn.functional as F

    out = {}
    for key in {k for row in rows for k in row}:
        parts = [row[key] for row in rows if key in row]
        shape = [max(p.shape[d] for p in parts) for d in range(parts[0].dim())]
        out[key] = torch.cat([F.pad(p, [x for d in reversed(range(1, p.dim())) for x in (0, shape[d] - p.shape[d])])
                              for p in parts])
    return out


def _rope_index_owner(model: Any) -> Any:
    """The module with a Qwen-VL family `get_rope_index` (the inner model), or None."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return next((m for m in (base, getattr(base, "model", None)) if hasattr(m, "get_rope_index")), None)


def model_positions(model: Any, input_ids: Any, attention_mask: Any, images: Mapping[str, Any]) -> Any:
    """Position ids as the model builds them when they are not a 1-D count of attended tokens:
    for the Qwen-VL family (M-RoPE), `[3, B, T]` from its own `get_rope_index`, with image tokens
    marked as its processor marks them and `image_grid_thw`; None for every other model."""
    owner = _rope_index_owner(model)
    if owner is None:
        return None
    config = owner.config
    types = (input_ids == config.image_token_id).int()
    if getattr(config, "video_token_id", None) is not None:
        types = types + 2 * (input_ids == config.video_token_id).int()
    positions, _ = owner.get_rope_index(input_ids, mm_token_type_ids=types, attention_mask=attention_mask,
                                        image_grid_thw=images.get("image_grid_thw"),
                                        video_grid_thw=images.get("video_grid_thw"))
    return positions


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
