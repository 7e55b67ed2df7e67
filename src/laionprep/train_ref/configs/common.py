"""Fields every FLIP config has, with FLIP's pre-training recipe as the defaults (Li et al. 2023, and the
published configs of facebookresearch/flip): AdamW (b1 0.9, b2 0.95, weight decay 0.2, none on biases / norms /
position embeddings / temperature), base learning rate 4e-6 per 256 examples, batch 65536, linear warmup then
cosine decay to 0, random-resized-crop with area 0.5..1, WordPiece (BERT-uncased) text of at most 32 tokens,
image embeddings averaged over the visible patches, learnable temperature initialised to 0.07 and clipped to
[0.01, 1] (logit scale in [0, log 100]).

Schedules are counted in examples so that they do not change with the batch size: FLIP trains for 10,000
"virtual ImageNet epochs" of 1,281,167 images (12.8B images, ~32 epochs of LAION-400M) with 20 such epochs of
warmup.  ``num_train_steps`` / ``warmup_steps`` override the counts when >= 0 (num_train_steps when > 0).
"""
import ml_collections

IMAGENET_EPOCH = 1_281_167  # FLIP's "virtual epoch"


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()

    # ---- training data (see input_pipeline.py): TFDS name (+ data_dir), TFDS builder dir, TFRecord folder or glob
    c.data = ml_collections.ConfigDict()
    c.data.source = ""
    c.data.data_dir = ""            # TFDS data_dir when source is a TFDS name
    c.data.split = "train"
    c.data.shuffle_buffer = 10_000  # examples (encoded) per process; also what a checkpoint of the position holds
    c.data.shuffle_files = True
    c.data.area_range = (0.5, 1.0)  # random-resized-crop area fraction (FLIP: 0.5..1)
    c.data.aspect_ratio_range = (3.0 / 4.0, 4.0 / 3.0)
    c.data.flip = True
    c.data.checkpoint_position = True  # save/restore the tf.data iterator with every checkpoint
    # tf.data (streams TFRecords) | grain (ArrayRecord shards, random access: a global shuffle per epoch and a resume
    # position of a few integers that any process count continues; grain_pipeline.py)
    c.data.loader = "tf.data"
    c.data.grain_workers = 0        # grain: processes decoding JPEGs (0: one thread of the training process)
    c.data.keys_log = ""            # grain: append each batch's record keys to this JSONL file (diagnostics, tests)

    # ---- tokenizer: WordPiece, lower-cased; vocab file, or learned from data.source when empty
    c.tokenizer = ml_collections.ConfigDict()
    c.tokenizer.vocab = ""          # path to vocab.txt (e.g. BERT-base-uncased's); empty: learn from the data
    c.tokenizer.vocab_size = 30_522  # size to learn when vocab is empty
    c.tokenizer.learn_examples = 1_000_000  # captions read to learn it
    c.tokenizer.max_len = 32

    # ---- CLIPA text token reduction (see text_reduction.py): train on `length` tokens ([CLS] + length-2 + [SEP])
    c.text_reduction = ml_collections.ConfigDict()
    c.text_reduction.strategy = "none"  # none | truncate | random | block | syntax
    c.text_reduction.length = 32
    c.text_reduction.wordnet_dir = "/usr/share/wordnet"  # syntax: WordNet database (Debian package wordnet-base)

    # ---- text side: the variant (variants.py) -- tokens (FLIP / CLIPA: WordPiece ids, a text tower) | render
    # (CLIPPO: captions drawn with Unifont, one shared ViT; configs/clippo_common.py)
    c.text_input = "tokens"
    c.unifont_path = ""             # render: GNU Unifont .hex; empty: the system's (Debian package unifont)
    c.text_render = ml_collections.ConfigDict()  # render: see text_render.py
    c.text_render.cell_size = 16    # px per text line (a full-width glyph); 16 = Unifont's own size; 4/8 downsample
    c.text_render.lower = True
    c.text_render.text_brightness = 0
    c.text_render.background_brightness = 127

    # ---- model (see models.py)
    c.model = ml_collections.ConfigDict()
    c.model.embed_dim = 512
    c.model.dtype = "bfloat16"      # compute dtype: float32 | bfloat16 (parameters and optimizer stay float32)
    c.model.remat_policy = "none"   # none | minimal | dots | full: rematerialise block activations in backprop
    c.model.temperature_init = 0.07
    c.model.image = ml_collections.ConfigDict()
    c.model.image.image_size = 224
    c.model.image.patch_size = 16
    c.model.image.width = 768
    c.model.image.depth = 12
    c.model.image.num_heads = 12
    c.model.image.mlp_dim = 3072
    c.model.image.mask_ratio = 0.5  # FLIP pre-training masks half the patches; 0.0 for unmasked tuning
    c.model.image.pos_embed = "sincos"        # sincos (fixed 2-D) | learn; see pos_embed.py
    c.model.image.pos_embed_resize = "bilinear"  # bilinear | bicubic: learned ones loaded at another resolution
    c.model.text = ml_collections.ConfigDict()
    c.model.text.vocab_size = 0     # 0: the tokenizer's vocabulary size rounded up to a multiple of 128
    c.model.text.width = 512
    c.model.text.depth = 12
    c.model.text.num_heads = 8
    c.model.text.mlp_dim = 2048

    # ---- optimisation (see optim.py)
    c.optimizer = "adamw"           # adamw | adafactor (big_vision's: factored 2nd moment, bf16 momentum 0.9)
    c.lr_schedule = "cosine"        # cosine | rsqrt (warmup, lr / sqrt(1 + (step - warmup) / timescale), cooldown)
    c.rsqrt_timescale = 10_000      # rsqrt schedule only
    c.cooldown_steps = 0            # rsqrt: linear decay to 0 over the last steps
    c.batch_size = 65_536           # global, over all devices and hosts
    c.learning_rate = 4e-6          # per 256 examples: peak lr = learning_rate * batch_size / 256
    c.min_learning_rate = 0.0       # per 256 examples, reached at the end of the cosine
    c.num_train_samples = 10_000 * IMAGENET_EPOCH
    c.warmup_samples = 20 * IMAGENET_EPOCH
    c.num_train_steps = -1          # > 0 overrides num_train_samples
    c.warmup_steps = -1             # >= 0 overrides warmup_samples
    c.b1 = 0.9
    c.b2 = 0.95
    c.weight_decay = 0.2
    c.grad_clip_norm = 0.0          # 0: off (FLIP does not clip)
    c.seed = 0

    # ---- parallelism
    c.partition_states = False      # shard parameters + optimizer state over the data axis (FLIP's partition_states)
    c.distributed = "auto"          # jax.distributed.initialize(): auto | True | False

    # ---- checkpoints and logs
    c.checkpoint_every_steps = 1000
    c.keep_checkpoints = 3
    c.async_checkpointing = True
    c.log_every_steps = 100
    c.pretrain_dir = ""             # start from another run's parameters (unmasked tuning) / evaluate it

    # ---- zero-shot evaluation (see evaluate.py)
    c.eval = ml_collections.ConfigDict()
    c.eval.source = ""              # TFDS name (imagenet2012), TFDS builder dir, or image folder DIR/SPLIT/<class>/
    c.eval.data_dir = ""
    c.eval.split = ""               # empty: validation / val / test, whichever exists
    c.eval.class_names = ""         # file of prompt names, one per line (required for imagenet2012's WordNet ids)
    c.eval.templates = "flip"       # flip (7) | clip80 | simple | path to a file of templates
    c.eval.batch_size = 1024
    c.eval.crop_fraction = 1.0      # central square of this fraction of the short side
    c.eval.image_key = "image"
    c.eval.label_key = "label"
    c.eval.every_steps = 0          # 0: only at the end of training

    # ---- staged schedules (CLIPA, see stages.py): stages.<name> holds the fields a stage changes
    c.stages = ml_collections.ConfigDict()
    c.stage_order = ()              # names of c.stages, run in this order; empty: one ordinary run
    return c
