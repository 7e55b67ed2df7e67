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

from laionprep.train_ref.configs import flip_tiny


def get_config():
    c = flip_tiny.get_config()
    c.model.image.mask_ratio = 0.0

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
