"""The trainer's variants, chosen by one config field, ``text_input`` (as big_vision picks ``models.<name>``):
what the text side is, which model encodes it, and how that model is initialised.  Train, evaluate and flops ask
this module; none of them branches on the variant.

* ``tokens`` -- ``flip``: the WordPiece tokenizer (tokenizer.py) and FLIP's image + text towers (models.py);
* ``render`` -- ``clippo``: the Unifont caption renderer (text_render.py) and one shared ViT (clippo.py).

CLIPA trains FLIP's towers: its text reduction, learned position embeddings and stages are config fields that any
``tokens`` run may set (text_reduction.py, pos_embed.py, stages.py), so it is not a variant of its own.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from laionprep._env import import_tf
from laionprep.errors import UsageError
from laionprep.train_ref import clippo, models, text_reduction, text_render, tokenizer as tokenizer_lib


class Flip:
    """WordPiece ids and FLIP's image + text towers (FLIP, CLIPA)."""

    name = "flip"
    text_input = "tokens"
    text_tower = "text"  # the tower that encodes captions (flops.py counts it)

    def text_processor(self, config, run_dir: str, *, training: bool):
        """The run's tokenizer: its stored ``vocab.txt``; when training, else ``pretrain_dir``'s, else
        ``config.tokenizer.vocab``, else one learned from ``config.data.source`` (written to ``run_dir``)."""
        if not training:
            return tokenizer_lib.tokenizer_from_config(config, run_dir)
        tf = import_tf()
        if not tf.io.gfile.exists(os.path.join(run_dir, "vocab.txt")) and config.pretrain_dir:
            pre = os.path.join(config.pretrain_dir, "vocab.txt")
            if tf.io.gfile.exists(pre):
                tokenizer_lib.write_vocab(tokenizer_lib.load_vocab(pre), os.path.join(run_dir, "vocab.txt"))
        return tokenizer_lib.tokenizer_from_config(config, run_dir, learn_source=config.data.source,
                                                   data_dir=config.data.data_dir, split=config.data.split)

    def build_model(self, config, processor):
        return models.build_model(config.model, processor.vocab_size, config.tokenizer.max_len)

    def example_text(self, config):
        return jnp.zeros((1, config.tokenizer.max_len), jnp.int32)

    def describe_text(self, config) -> str:
        if text_reduction.enabled(config):
            return f"{config.text_reduction.length} text tokens ({config.text_reduction.strategy})"
        return f"{config.tokenizer.max_len} text tokens"


class Clippo:
    """Captions rendered as images and one ViT for photos and text (CLIPPO)."""

    name = "clippo"
    text_input = "render"
    text_tower = "image"

    def text_processor(self, config, run_dir: str, *, training: bool):
        return text_render.renderer_from_config(config)

    def build_model(self, config, processor):
        return clippo.build_model(config.model)

    def example_text(self, config):
        s = config.model.image.image_size
        return jnp.zeros((1, s, s, 3), jnp.uint8)

    def describe_text(self, config) -> str:
        return "captions rendered as images"


VARIANTS = {v.text_input: v for v in (Flip(), Clippo())}
TEXT_INPUTS = tuple(VARIANTS)


def text_input(config) -> str:
    """``config.text_input``, checked: ``tokens`` (FLIP, CLIPA) or ``render`` (CLIPPO)."""
    mode = config.text_input
    if mode not in VARIANTS:
        raise UsageError(f"unknown text_input {mode!r}", where="--config.text_input",
                         fix=f"use one of {', '.join(TEXT_INPUTS)}")
    return mode


def get(config):
    """The variant of ``config``."""
    return VARIANTS[text_input(config)]


def text_side(config, run_dir: str, *, training: bool):
    """(text processor, model) of ``config``.  Processors have ``tokenize`` (in tf.data) and ``__call__`` (eager,
    for the zero-shot prompts).  ``run_dir`` holds (training: receives) the run's vocabulary."""
    v = get(config)
    processor = v.text_processor(config, run_dir, training=training)
    return processor, v.build_model(config, processor)


def example_text(config):
    """A one-example text batch of the model's text input (initialisation and shape inference): token ids
    ``[1, tokenizer.max_len]`` int32, or a rendered caption ``[1, S, S, 3]`` uint8."""
    return get(config).example_text(config)


def init_params(model, config, key):
    """Freshly initialised parameters of ``model`` (the ``params`` collection)."""
    s = config.model.image.image_size
    return model.init(key, jnp.zeros((1, s, s, 3), jnp.float32), example_text(config), train=False)["params"]


def abstract_params(model, config):
    """Shapes and dtypes of ``model``'s parameters, without computing them."""
    return jax.eval_shape(lambda: init_params(model, config, jax.random.PRNGKey(0)))


def describe_text(config) -> str:
    """What the text side trains on, for the logs: rendered captions (CLIPPO) or N tokens (and how reduced)."""
    return get(config).describe_text(config)
