"""Fields every CLIPPO config has (Tschannen et al. 2022, big_vision's ``configs/proj/clippo/train_clippo.py``):
FLIP's base config with the text side switched to rendered captions (``text_input='render'``: no tokenizer, no text
tower; one ViT encodes photos and text) and CLIPPO's recipe as the defaults: no patch masking, Adafactor (big_vision
variant) with learning rate 1e-3 and decoupled weight decay 1e-4, gradient clipping at norm 1, an rsqrt schedule
(timescale 10k) with 10k warmup and 10k cooldown steps, temperature initialised to 0.1 (big_vision's ``t`` = 10),
embeddings of 768, captions lower-cased in 16 px Unifont cells, black (0) on grey (127).
"""
import ml_collections

from laionprep.train_ref.configs.common import base_config


def clippo_base() -> ml_collections.ConfigDict:
    c = base_config()
    c.text_input = "render"         # captions drawn with Unifont, one shared ViT (base_config documents the fields)
    c.model.image.mask_ratio = 0.0  # CLIPPO does not mask patches
    c.model.temperature_init = 0.1
    c.model.embed_dim = 768
    c.optimizer = "adafactor"
    c.lr_schedule = "rsqrt"
    c.rsqrt_timescale = 10_000
    c.cooldown_steps = 10_000
    c.learning_rate = 1e-3 * 256 / 10_240  # per 256 examples: peak 1e-3 at batch 10240
    c.weight_decay = 1e-4
    c.grad_clip_norm = 1.0
    c.data.shuffle_buffer = 250_000
    return c
