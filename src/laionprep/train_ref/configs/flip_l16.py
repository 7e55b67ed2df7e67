"""FLIP ViT-L/16: image ViT-L/16 (1024 wide, 24 deep, 16 heads), text 768 wide / 12 deep / 12 heads, embedding
768; batch 65536, lr 4e-6 per 256, 12.8B samples with 25.6M warmup, mask ratio 0.5, parameters and optimizer
state sharded over the devices (FLIP's partition_states).

Unmasked tuning after pre-training: a short run from W's parameters with masking off and a 100x lower learning
rate; set the schedule for it (here, as an example, 128M samples without warmup):

    laionprep train --config .../flip_l16.py --workdir W2 --config.pretrain_dir=W \
        --config.model.image.mask_ratio=0.0 --config.learning_rate=4e-8 \
        --config.num_train_samples=128000000 --config.warmup_samples=0
"""
from laionprep.train_ref.configs.common import base_config


def get_config():
    c = base_config()
    c.model.image.update(patch_size=16, width=1024, depth=24, num_heads=16, mlp_dim=4096)
    c.model.text.update(width=768, depth=12, num_heads=12, mlp_dim=3072)
    c.model.embed_dim = 768
    c.partition_states = True
    c.eval.source = "imagenet2012"
    return c
