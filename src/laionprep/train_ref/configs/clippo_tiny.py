"""clippo_tiny: a CLIPPO small enough to train on a laptop CPU in a minute or two (``laionprep demo --variant
clippo``).  One 3-layer 96-wide ViT sees 32x32 photos and the captions rendered at 32x32 px in 8 px cells (Unifont
glyphs averaged 2x2: 4 lines of 8 characters), float32, batch 128, 200 steps.  CLIPPO's recipe shrunk to the short
run: Adafactor, gradient clip 1, weight decay 1e-4, rsqrt schedule with 30 warmup steps, timescale 50 and 50
cooldown steps, peak learning rate 1e-3.  On the synthetic demo data (30 colour x shape classes) it reaches ~25-30%
zero-shot top-1 (chance 3.3%).

    laionprep train --config clippo_tiny --workdir /tmp/clippo_tiny \
        --config.data.source=DEMO_DOWNLOAD_DIR --config.eval.source=EVAL_FOLDER
"""
from laionprep.train_ref.configs.clippo_common import clippo_base


def get_config():
    c = clippo_base()
    c.data.shuffle_buffer = 2_000
    c.model.dtype = "float32"
    c.model.embed_dim = 96
    c.model.image.update(image_size=32, patch_size=8, width=96, depth=3, num_heads=3, mlp_dim=384, mask_ratio=0.0)
    c.text_render.cell_size = 8
    c.batch_size = 128
    c.learning_rate = 2e-3           # per 256 -> peak 1e-3 at batch 128
    c.num_train_steps = 200
    c.warmup_steps = 30
    c.rsqrt_timescale = 50
    c.cooldown_steps = 50
    c.checkpoint_every_steps = 100
    c.keep_checkpoints = 2
    c.log_every_steps = 25
    c.eval.batch_size = 256
    return c
