"""FLIP ViT-H/14: image ViT-H/14 (1280 wide, 32 deep, 16 heads), text 1024 wide / 24 deep / 16 heads, embedding
1024; batch 65536, lr 4e-6 per 256, 12.8B samples with 256M warmup (200 virtual epochs), mask ratio 0.5,
parameters and optimizer state sharded, block activations rematerialised.
"""
from laionprep.train_ref.configs.common import IMAGENET_EPOCH, base_config


def get_config():
    c = base_config()
    c.model.image.update(image_size=224, patch_size=14, width=1280, depth=32, num_heads=16, mlp_dim=5120)
    c.model.text.update(width=1024, depth=24, num_heads=16, mlp_dim=4096)
    c.model.embed_dim = 1024
    c.warmup_samples = 200 * IMAGENET_EPOCH
    c.partition_states = True
    c.model.remat_policy = "minimal"
    c.eval.source = "imagenet2012"
    return c
