"""flip_tiny: a FLIP small enough to train on a laptop CPU in about a minute (the `laionprep demo` model).

32x32 images in 8x8 patches (16 patches, 8 kept at mask ratio 0.5), a 3-layer 96-wide ViT, a 2-layer 96-wide
text Transformer, float32, batch 128, 200 steps, a vocabulary learned from the captions.  Everything else follows
FLIP (AdamW b2 0.95, weight decay 0.2, warmup + cosine, random-resized-crop 0.5..1, no weight decay on
biases/norms), with a learning rate raised for the tiny model and the short run.  On the synthetic demo data
(30 colour x shape classes) it reaches ~30% zero-shot top-1 (chance 3.3%) in under a minute on 2 CPU cores.

    laionprep train --config src/laionprep/train_ref/configs/flip_tiny.py --workdir /tmp/flip_tiny \
        --config.data.source=DEMO_DOWNLOAD_DIR --config.eval.source=EVAL_FOLDER
"""
from laionprep.train_ref.configs.common import base_config


def get_config():
    c = base_config()
    c.data.shuffle_buffer = 2_000
    c.tokenizer.vocab_size = 1_000
    c.tokenizer.learn_examples = 100_000
    c.tokenizer.max_len = 32
    c.model.dtype = "float32"
    c.model.embed_dim = 96
    c.model.image.update(image_size=32, patch_size=8, width=96, depth=3, num_heads=3, mlp_dim=384, mask_ratio=0.5)
    c.model.text.update(width=96, depth=2, num_heads=3, mlp_dim=384)
    c.batch_size = 128
    c.learning_rate = 2e-3           # per 256 -> peak 1e-3 at batch 128
    c.num_train_steps = 200
    c.warmup_steps = 30
    c.checkpoint_every_steps = 100
    c.keep_checkpoints = 2
    c.log_every_steps = 25
    c.eval.batch_size = 256
    c.eval.templates = "flip"
    return c
