"""The CLIPA recipe (Li, Wang, Xie, *An Inverse Scaling Law for CLIP Training*; the released CLIPA JAX configs
for ViT-H/14, ``84_8_pre_training`` + ``unmask_tuning_224_scheduleX4``), as two stages of one run:

* ``low_res`` -- 12.8B samples (10,000 virtual ImageNet epochs) at ``res`` px with captions reduced to
  ``text_len`` tokens by the syntax strategy (or 32 tokens, unreduced), no patch masking, batch 65536,
  learning rate 8e-6 per 256 with 3,200 warmup steps (~210M samples), AdamW b2 0.95, weight decay 0.2,
  random-resized-crop area 0.4..1 (CLIPA's ``area_min=40``);
* ``full_res`` -- 512M samples (4 x 131,072,000) at 224 px with full 32-token captions, 30% of the patches masked,
  batch 32768, learning rate 4e-7 per 256 with 26.2M warmup samples, starting from ``low_res``'s parameters.

Data: both stages read ``data.source``; ``stages.low_res.data.source`` points the pre-training at a low-resolution
copy (``laionprep reshard --image-size 160``); the fine-tune and the
zero-shot evaluation stay at full resolution.

Not reproduced: CLIPA's colour jitter / grayscale augmentation and bfloat16 Adam moments.
``get_config("RES")`` or ``get_config("RES_TEXTLEN")`` (``--config clipa_h14:70_8``) picks the pre-training
resolution and text length.
"""
from __future__ import annotations

import ml_collections

from laionprep.errors import UsageError
from laionprep.train_ref.configs.common import IMAGENET_EPOCH


def parse_arg(arg, default_res: int, default_text: int) -> tuple[int, int]:
    if arg in (None, ""):
        return default_res, default_text
    parts = str(arg).split("_")
    try:
        res = int(parts[0])
        text = int(parts[1]) if len(parts) > 1 else default_text
    except ValueError as e:
        raise UsageError(f"config argument {arg!r} is not RES or RES_TEXTLEN", where="--config",
                         fix="e.g. --config clipa_h14:84 or clipa_h14:70_8") from e
    return res, text


def make_clipa(c: ml_collections.ConfigDict, res: int, text_len: int) -> ml_collections.ConfigDict:
    """Turn a FLIP config (model sizes) into CLIPA's two-stage schedule."""
    p = c.model.image.patch_size
    if res % p:
        raise UsageError(f"pre-training resolution {res} is not a multiple of the patch size {p}", where="--config",
                         fix=f"pick a multiple of {p}, e.g. {p * (res // p)} or {p * (res // p + 1)}")
    c.data.area_range = (0.4, 1.0)
    c.model.image.mask_ratio = 0.0
    c.tokenizer.max_len = 32
    c.stage_order = ("low_res", "full_res")
    reduction = {"strategy": "syntax", "length": text_len} if text_len < 32 else {"strategy": "none"}
    c.stages.low_res = ml_collections.ConfigDict({
        "model": {"image": {"image_size": res, "mask_ratio": 0.0}},
        "text_reduction": reduction,
        "batch_size": 65_536, "learning_rate": 8e-6,
        "num_train_samples": 10_000 * IMAGENET_EPOCH, "warmup_samples": 3_200 * 65_536,
    })
    c.stages.full_res = ml_collections.ConfigDict({
        "model": {"image": {"image_size": 224, "mask_ratio": 0.3}},
        "text_reduction": {"strategy": "none"},
        "batch_size": 32_768, "learning_rate": 4e-7,
        "num_train_samples": 4 * 131_072_000, "warmup_samples": 26_214_400,
    })
    return c
