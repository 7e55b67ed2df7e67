"""clipa_tiny: CLIPA's recipe at the scale of flip_tiny (the `laionprep demo --variant clipa` model).

Two stages in one run (see stages.py): most of the training on 16x16 images (4 patches of 8x8) with captions
reduced to 8 tokens by the syntax strategy (nouns, then adjectives, then verbs), then a short fine-tune at the full
32x32 (16 patches) with full captions.  Same towers as flip_tiny (3-layer 96-wide ViT, 2-layer 96-wide text),
float32, batch 128, no patch masking (CLIPA pre-trains unmasked at low resolution).  The fine-tune starts a fresh
optimizer from the stage-1 parameters with its own warmup and a lower learning rate, as CLIPA's does.

    laionprep train --config clipa_tiny --workdir /tmp/clipa_tiny \
        --config.data.source=DEMO_DOWNLOAD_DIR --config.eval.source=EVAL_FOLDER
"""
import ml_collections

from laionprep.train_ref.configs.common import base_config


def get_config():
    c = base_config()
    c.data.shuffle_buffer = 2_000
    c.tokenizer.vocab_size = 1_000
    c.tokenizer.learn_examples = 100_000
    c.tokenizer.max_len = 32
    c.model.dtype = "float32"
    c.model.embed_dim = 96
    c.model.image.update(image_size=32, patch_size=8, width=96, depth=3, num_heads=3, mlp_dim=384, mask_ratio=0.0)
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

    c.stage_order = ("low_res", "full_res")
    c.stages.low_res = ml_collections.ConfigDict({
        "model": {"image": {"image_size": 16}},
        "text_reduction": {"strategy": "syntax", "length": 8},
        "num_train_steps": 200, "warmup_steps": 30,
    })
    c.stages.full_res = ml_collections.ConfigDict({
        "model": {"image": {"image_size": 32}},
        "text_reduction": {"strategy": "none"},
        "learning_rate": 5e-4, "num_train_steps": 50, "warmup_steps": 10, "checkpoint_every_steps": 25,
    })
    return c
