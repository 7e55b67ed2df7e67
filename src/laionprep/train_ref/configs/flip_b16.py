"""FLIP ViT-B/16: image ViT-B/16 (768 wide, 12 deep, 12 heads), text 512 wide / 12 deep / 8 heads, embedding 512;
batch 65536, lr 4e-6 per 256, 12.8B samples with 25.6M warmup, mask ratio 0.5.

    laionprep train --config src/laionprep/train_ref/configs/flip_b16.py --workdir W \
        --config.data.source=gs://BUCKET/laion400m --config.tokenizer.vocab=bert_uncased_vocab.txt
"""
from laionprep.train_ref.configs.common import base_config


def get_config():
    c = base_config()
    c.model.image.update(patch_size=16, width=768, depth=12, num_heads=12, mlp_dim=3072)
    c.model.text.update(width=512, depth=12, num_heads=8, mlp_dim=2048)
    c.model.embed_dim = 512
    return c
