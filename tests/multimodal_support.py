"""Tiny random vision-language students, one per family, built offline from configs: small
vision towers on 32 px images, 2-layer text models (hidden size 32) and processors made of
the SmolLM2 tokenizer plus each family's image tokens. Each one saves to a directory that
`AutoModelForImageTextToText` / `AutoProcessor` load back.

| family | model class | image inputs | positions |
|---|---|---|---|
| llava | LlavaForConditionalGeneration (SigLIP + Llama) | pixel_values | 1-D |
| qwen2_vl | Qwen2VLForConditionalGeneration | pixel_values (patches), image_grid_thw | 3-D M-RoPE |
| idefics3 | Idefics3ForConditionalGeneration (SmolVLM) | pixel_values [B, N, C, H, W], pixel_attention_mask | 1-D |
| llava_onevision | LlavaOnevisionForConditionalGeneration (SigLIP + Qwen2) | pixel_values, image_sizes | 1-D |
"""

from pathlib import Path
from typing import Callable

FAMILIES = ("llava", "qwen2_vl", "idefics3", "llava_onevision")
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=1024)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)


def chat_template(image_part: str) -> str:
    """The SmolLM2 chat format, with content given as a list of image and text parts."""
    return (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
        "{% for part in message['content'] %}{% if part['type'] == 'image' %}" + image_part + "\n"
        "{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


CHAT_TEMPLATE = chat_template("<image>")


def _image_only_processors() -> dict:
    """Qwen2-VL's and LLaVA-OneVision's processors without a video processor, registered with
    `AutoProcessor`. Transformers 5 requires a video processor for both, and video processors
    need torchvision, which has no CPU build for this torch here; the image path (and so every
    input the tests use) is the classes' own. With torchvision installed, the real classes."""
    from transformers import (AutoProcessor, LlavaOnevisionConfig, LlavaOnevisionProcessor, Qwen2VLConfig,
                              Qwen2VLProcessor)
    from transformers.utils import is_torchvision_available

    if is_torchvision_available():
        return {"qwen2_vl": Qwen2VLProcessor, "llava_onevision": LlavaOnevisionProcessor}

    class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            super().__init__(image_processor, tokenizer, None, chat_template, **kwargs)

    class ImageOnlyLlavaOnevisionProcessor(LlavaOnevisionProcessor):
        def __init__(self, image_processor=None, tokenizer=None, num_image_tokens=None,
                     vision_feature_select_strategy=None, chat_template=None, image_token="<image>",
                     video_token="<video>", vision_aspect_ratio="anyres_max_9", **kwargs):
            super().__init__(image_processor, tokenizer, None, num_image_tokens, vision_feature_select_strategy,
                             chat_template, image_token, video_token, vision_aspect_ratio, **kwargs)

    AutoProcessor.register(Qwen2VLConfig, ImageOnlyQwen2VLProcessor, exist_ok=True)
    AutoProcessor.register(LlavaOnevisionConfig, ImageOnlyLlavaOnevisionProcessor, exist_ok=True)
    return {"qwen2_vl": ImageOnlyQwen2VLProcessor, "llava_onevision": ImageOnlyLlavaOnevisionProcessor}


def idefics3_image_processor() -> type:
    """Idefics3's PIL image processor, registered with `AutoImageProcessor` where transformers
    would hand out a placeholder for it. Transformers 5.10 files `image_processing_pil_idefics3`
    under the torchvision backend (its docstrings name `TorchvisionBackend`), so without
    torchvision the class, and `AutoProcessor` on a saved SmolVLM, raise ImportError although the
    class needs only PIL. The module's own class is the real one; newer transformers need nothing."""
    from transformers import Idefics3Config
    from transformers.models.auto.image_processing_auto import AutoImageProcessor
    from transformers.models import idefics3
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    if getattr(idefics3.Idefics3ImageProcessorPil, "is_dummy", False):
        AutoImageProcessor.register(Idefics3Config, image_processor_classes={"pil": Idefics3ImageProcessorPil},
                                    exist_ok=True)
    return Idefics3ImageProcessorPil


def _tokenizer(tokenizer_dir: Path, tokens: list[str]):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": tokens})
    return tokenizer


def _ids(tokenizer) -> dict:
    return dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)


def _save(model_class, config, processor, out: Path) -> Path:
    import torch

    torch.manual_seed(0)
    model_class(config).save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_tiny_vlm(tokenizer_dir: Path, out: Path) -> Path:
    """LLaVA: a 2-layer SigLIP tower (patch 8, 16 image tokens) and a 2-layer Llama."""
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor, SiglipVisionConfig
    from transformers.models.siglip import SiglipImageProcessorPil

    tokenizer = _tokenizer(tokenizer_dir, ["<image>"])
    vision = SiglipVisionConfig(**VISION, image_size=32, patch_size=8)
    config = LlavaConfig(vision_config=vision, text_config=LlamaConfig(**TEXT, **_ids(tokenizer)),
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
                         vision_feature_select_strategy="full", image_seq_length=16)
    processor = LlavaProcessor(image_processor=SiglipImageProcessorPil(size={"height": 32, "width": 32}),
                               tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="full",
                               num_additional_image_tokens=0, chat_template=CHAT_TEMPLATE)
    return _save(LlavaForConditionalGeneration, config, processor, out)


def build_tiny_qwen2_vl(tokenizer_dir: Path, out: Path) -> Path:
    """Qwen2-VL: a 2-layer vision tower (patch 8, 2x2 merge: 4 image tokens on a 32 px image), a
    2-layer Qwen2 text model with 3-D M-RoPE, and Qwen's vision tokens added to the tokenizer."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil

    special = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tokenizer = _tokenizer(tokenizer_dir, special)
    start, end, image, video = tokenizer.convert_tokens_to_ids(special)
    # Larger weights and a shorter rotary period than the other fixtures: peaked distributions in
    # which wrong positions move the sampled tokens' probabilities, not only their log-probs (with
    # 1-D positions PPO's rollout_probs_diff_max is ~0.04 here, far above the tests' 1e-3).
    rope = {"rope_type": "default", "rope_theta": 100.0, "mrope_section": [1, 1, 2]}
    text = dict(TEXT, **_ids(tokenizer), initializer_range=0.5, rope_parameters=rope)
    vision = dict(depth=2, embed_dim=32, hidden_size=32, num_heads=4, mlp_ratio=2, patch_size=8,
                  spatial_merge_size=2, temporal_patch_size=2)
    config = Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=image, video_token_id=video,
                           vision_start_token_id=start, vision_end_token_id=end)
    images = Qwen2VLImageProcessorPil(patch_size=8, merge_size=2, temporal_patch_size=2,
                                      size={"shortest_edge": 16 * 16, "longest_edge": 64 * 64})
    processor = _image_only_processors()["qwen2_vl"](image_processor=images, tokenizer=tokenizer,
                                 chat_template=chat_template("<|vision_start|><|image_pad|><|vision_end|>"))
    return _save(Qwen2VLForConditionalGeneration, config, processor, out)


def build_tiny_idefics3(tokenizer_dir: Path, out: Path) -> Path:
    """Idefics3 (the SmolVLM architecture): a 2-layer tower on 32 px tiles (patch 8), pixel
    shuffle by 2 (4 image tokens per tile), no image splitting, a 2-layer Llama."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor

    tokenizer = _tokenizer(tokenizer_dir, ["<fake_token_around_image>", "<image>", "<end_of_utterance>",
                                           "<global-img>"])
    config = Idefics3Config(text_config=dict(TEXT, model_type="llama", **_ids(tokenizer)),
                            vision_config=dict(VISION, image_size=32, patch_size=8), scale_factor=2,
                            image_token_id=tokenizer.convert_tokens_to_ids("<image>"))
    images = idefics3_image_processor()(do_image_splitting=False, size={"longest_edge": 32},
                                         max_image_size={"longest_edge": 32})
    processor = Idefics3Processor(image_processor=images, tokenizer=tokenizer, image_seq_len=4,
                                  chat_template=CHAT_TEMPLATE)
    return _save(Idefics3ForConditionalGeneration, config, processor, out)


def build_tiny_llava_onevision(tokenizer_dir: Path, out: Path) -> Path:
    """LLaVA-OneVision: a 2-layer SigLIP tower (32 px, patch 8) with any-resolution tiling over
    32/64 px grids, a 2-layer Qwen2 text model."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
    from transformers.models.llava_onevision import LlavaOnevisionImageProcessorPil

    tokenizer = _tokenizer(tokenizer_dir, ["<image>", "<video>"])
    pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64]]
    config = LlavaOnevisionConfig(
        text_config=dict(TEXT, model_type="qwen2", **_ids(tokenizer)),
        vision_config=dict(VISION, model_type="siglip_vision_model", image_size=32, patch_size=8),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"), image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full", vision_feature_layer=-1,
    )
    images = LlavaOnevisionImageProcessorPil(size={"height": 32, "width": 32}, image_grid_pinpoints=pinpoints)
    processor = _image_only_processors()["llava_onevision"](
        image_processor=images, tokenizer=tokenizer, num_image_tokens=16, vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE)
    return _save(LlavaOnevisionForConditionalGeneration, config, processor, out)


BUILDERS: dict[str, Callable[[Path, Path], Path]] = {
    "llava": build_tiny_vlm, "qwen2_vl": build_tiny_qwen2_vl, "idefics3": build_tiny_idefics3,
    "llava_onevision": build_tiny_llava_onevision,
}
