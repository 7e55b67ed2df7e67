"""CLIPPO ViT-B/16 (Tschannen et al. 2022, big_vision's LAION-400M recipe): one ViT-B/16 (768 wide, 12 deep, 12
heads, MLP 3072) for 224 px photos and captions rendered at 224 px in 16 px Unifont cells (14 lines of 28
characters), embedding 768; batch 10240, 100k steps, Adafactor lr 1e-3, weight decay 1e-4, gradient clip 1, rsqrt
schedule (timescale 10k) with 10k warmup and 10k cooldown steps, no masking, bfloat16.

    laionprep train --config clippo_b16 --workdir W --config.data.source=laion400m_tfrecord \
        --config.data.data_dir=/data/tfds --config.eval.source=imagenet2012 --config.eval.class_names=names.txt
"""
from laionprep.train_ref.configs.clippo_common import clippo_base


def get_config():
    c = clippo_base()
    c.model.image.update(image_size=224, patch_size=16, width=768, depth=12, num_heads=12, mlp_dim=3072,
                         mask_ratio=0.0)
    c.model.embed_dim = 768
    c.batch_size = 10_240
    c.num_train_steps = 100_000
    c.warmup_steps = 10_000
    c.cooldown_steps = 10_000
    c.rsqrt_timescale = 10_000
    c.text_render.cell_size = 16
    return c
