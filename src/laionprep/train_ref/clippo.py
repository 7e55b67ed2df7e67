"""CLIPPO (Tschannen, Mustafa, Houlsby 2022): CLIP with pixels only -- one ViT for photos *and* text.

Selected by ``text_input=render`` (variants.py).  Captions are rendered into images
(:mod:`~laionprep.train_ref.text_render`) and encoded by the same :class:`~laionprep.train_ref.models.ImageEncoder`
(patch embedding, Transformer, pooling and projection head: one set of parameters, as big_vision's ``one_tower``
model, whose single ViT carries the single output head) that encodes the photos.  No tokenizer, no text tower.
Loss, temperature, training loop, checkpoints and zero-shot evaluation are the FLIP trainer's: the module has
:class:`~laionprep.train_ref.models.FLIP`'s interface (``__call__(images, text, train)``, ``encode_image``,
``encode_text``, ``clipped_logit_scale``), with ``text`` the uint8 rendered captions, normalised here like the photos.

Differences from the paper's model: pooling is the FLIP tower's mean over the tokens (CLIPPO uses a MAP head), and
position embeddings are FLIP's fixed 2-D sin-cos ones.  ``model.image.mask_ratio`` > 0 would mask the patches of
photos and rendered text alike (CLIPPO does not mask: its configs set 0).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

from laionprep.train_ref import input_pipeline, models


class CLIPPO(nn.Module):
    """One ViT (``tower``) for photos and rendered captions, plus the learnable temperature."""

    tower: models.ImageEncoder
    temperature_init: float = 0.1

    def setup(self):
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(math.log(1.0 / self.temperature_init)),
                                      ())

    def encode_image(self, images, *, train: bool = False):
        """``images``: normalised floats (as the training step and the evaluation pass them)."""
        return models.l2_normalize(self.tower(images, train=train))

    def encode_text(self, text_images, *, train: bool = False):
        """``text_images``: uint8 ``[B, S, S, 3]`` rendered captions -> L2-normalised ``[B, embed_dim]``."""
        x = input_pipeline.normalize(text_images, self.tower.dtype)
        return models.l2_normalize(self.tower(x, train=train))

    def clipped_logit_scale(self):
        return jnp.clip(self.logit_scale, 0.0, math.log(100.0))

    def __call__(self, images, text, *, train: bool):
        return (self.encode_image(images, train=train), self.encode_text(text, train=train),
                self.clipped_logit_scale())


def build_model(mcfg) -> CLIPPO:
    """The CLIPPO module for ``config.model`` (the ``image`` fields describe the one ViT; ``text`` is unused)."""
    tower = models.build_image_encoder(mcfg, pos_embed="sincos")  # CLIPPO keeps FLIP's fixed position embeddings
    return CLIPPO(tower=tower, temperature_init=mcfg.temperature_init)
