"""FLIP in Flax linen: a CLIP whose image tower sees only a random subset of patches during training.

* Image tower: a ViT.  The image is cut into ``patch_size`` patches; during training each example keeps exactly
  ``int(L * (1 - mask_ratio))`` of its ``L`` patches, chosen by a fresh random permutation per example per step
  (the ``'mask'`` RNG stream); at evaluation nothing is masked.  Masking happens before the patch embedding, so the
  masked patches cost nothing.  Fixed 2-D sin-cos position embeddings (or learned ones; both in pos_embed.py), pre-LN
  Transformer blocks, a final LayerNorm, global average pooling over the visible tokens (FLIP's
  ``img_avg_token``) and a linear projection.
* Text tower: token + learned position embeddings, a non-causal pre-LN Transformer with padding masked out, a final
  LayerNorm, mean pooling over the real tokens, a linear projection.
* Both embeddings are L2-normalised; the learnable temperature is ``exp(logit_scale)`` with ``logit_scale``
  initialised to ``log(1/0.07)`` and clipped to ``[0, log 100]``.
* :func:`contrastive_loss`: symmetric InfoNCE over the whole global batch.  Under ``jax.jit`` with a data-sharded
  batch each device computes its rows of the ``[B, B]`` logits against the gathered embeddings of the other side.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from laionprep.train_ref import pos_embed as pos_embed_lib, runtime

Dtype = Any

REMAT_POLICIES = ("none", "full", "minimal", "dots")


def num_kept(num_patches: int, mask_ratio: float) -> int:
    """Patches kept at ``mask_ratio`` (FLIP: ``int(L * (1 - mask_ratio))``)."""
    return int(num_patches * (1.0 - mask_ratio))


def random_keep_ids(rng, batch: int, length: int, keep: int):
    """``[batch, keep]`` patch indices: the first ``keep`` of an independent random permutation per example."""
    noise = jax.random.uniform(rng, (batch, length))
    return jnp.argsort(noise, axis=1)[:, :keep]


def patchify(images, patch: int):
    b, h, w, c = images.shape
    if h % patch or w % patch:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {patch}")
    x = images.reshape(b, h // patch, patch, w // patch, patch, c)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // patch) * (w // patch), patch * patch * c)


class MlpBlock(nn.Module):
    mlp_dim: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        x = nn.Dense(self.mlp_dim, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(), name="fc1")(x)
        x = nn.gelu(x)
        return nn.Dense(d, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(), name="fc2")(x)


class EncoderBlock(nn.Module):
    num_heads: int
    mlp_dim: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask=None):
        y = nn.LayerNorm(dtype=self.dtype, name="ln1")(x)
        y = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, dtype=self.dtype,
                                            kernel_init=nn.initializers.xavier_uniform(), deterministic=True,
                                            force_fp32_for_softmax=True, name="attn")(y, mask=mask)
        x = x + y
        y = nn.LayerNorm(dtype=self.dtype, name="ln2")(x)
        return x + MlpBlock(self.mlp_dim, self.dtype, name="mlp")(y)


def _remat_block(policy: str):
    if policy in (None, "", "none"):
        return EncoderBlock
    if policy == "full":  # recompute everything in the backward pass
        pol = jax.checkpoint_policies.nothing_saveable
    elif policy == "minimal":  # FLIP's "minimal": keep matmul outputs without batch dims
        pol = jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims
    elif policy == "dots":
        pol = jax.checkpoint_policies.dots_saveable
    else:
        raise ValueError(f"unknown remat_policy {policy!r}; use one of {REMAT_POLICIES}")
    return nn.remat(EncoderBlock, policy=pol, prevent_cse=True)


class Encoder(nn.Module):
    depth: int
    num_heads: int
    mlp_dim: int
    dtype: Dtype = jnp.float32
    remat_policy: str = "none"

    @nn.compact
    def __call__(self, x, mask=None):
        block = _remat_block(self.remat_policy)
        for i in range(self.depth):
            x = block(self.num_heads, self.mlp_dim, self.dtype, name=f"block_{i:02d}")(x, mask)
        return nn.LayerNorm(dtype=self.dtype, name="ln_final")(x)


class ImageEncoder(nn.Module):
    """ViT with FLIP's random patch masking.  Returns the (unnormalised) projected embedding ``[B, embed_dim]``."""

    image_size: int
    patch_size: int
    width: int
    depth: int
    num_heads: int
    mlp_dim: int
    embed_dim: int
    mask_ratio: float = 0.0
    dtype: Dtype = jnp.float32
    remat_policy: str = "none"
    pos_embed: str = "sincos"  # sincos (fixed) | learn (see pos_embed.py)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @nn.compact
    def __call__(self, images, *, train: bool):
        b = images.shape[0]
        x = patchify(images, self.patch_size)  # [B, L, p*p*3]
        L = x.shape[1]
        pos = pos_embed_lib.image_pos_embed(self, self.pos_embed, self.image_size // self.patch_size, self.width)
        if train and self.mask_ratio > 0.0:
            keep = num_kept(L, self.mask_ratio)
            if keep < 1:
                raise ValueError(f"mask_ratio={self.mask_ratio} keeps no patch of {L}")
            ids = random_keep_ids(self.make_rng("mask"), b, L, keep)  # fresh per example, per step
            self.sow("intermediates", "kept_ids", ids)
            x = jnp.take_along_axis(x, ids[:, :, None], axis=1)
            pos = pos[ids]  # [B, keep, D]
        x = nn.Dense(self.width, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(),
                     name="patch_embed")(x.astype(self.dtype))
        x = x + pos.astype(self.dtype)
        x = Encoder(self.depth, self.num_heads, self.mlp_dim, self.dtype, self.remat_policy, name="encoder")(x)
        x = jnp.mean(x, axis=1)
        return nn.Dense(self.embed_dim, use_bias=False, dtype=self.dtype,
                        kernel_init=nn.initializers.xavier_uniform(), name="proj")(x)


class TextEncoder(nn.Module):
    """Non-causal Transformer over WordPiece ids (0 = padding).  Returns ``[B, embed_dim]``."""

    vocab_size: int
    max_len: int
    width: int
    depth: int
    num_heads: int
    mlp_dim: int
    embed_dim: int
    dtype: Dtype = jnp.float32
    remat_policy: str = "none"

    @nn.compact
    def __call__(self, tokens):
        valid = tokens != 0
        x = nn.Embed(self.vocab_size, self.width, embedding_init=nn.initializers.normal(0.02),
                     name="token_embed")(tokens)
        pos = self.param("pos_embed", nn.initializers.normal(0.02), (self.max_len, self.width))
        x = (x + pos[None, : tokens.shape[1]]).astype(self.dtype)
        attn_mask = nn.make_attention_mask(valid, valid)
        x = Encoder(self.depth, self.num_heads, self.mlp_dim, self.dtype, self.remat_policy, name="encoder")(
            x, attn_mask)
        w = valid.astype(x.dtype)[..., None]
        x = jnp.sum(x * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)
        return nn.Dense(self.embed_dim, use_bias=False, dtype=self.dtype,
                        kernel_init=nn.initializers.xavier_uniform(), name="proj")(x)


def l2_normalize(x, eps: float = 1e-6):
    x = x.astype(jnp.float32)
    return x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


class FLIP(nn.Module):
    image: ImageEncoder
    text: TextEncoder
    temperature_init: float = 0.07

    def setup(self):
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(math.log(1.0 / self.temperature_init)),
                                      ())

    def encode_image(self, images, *, train: bool = False):
        return l2_normalize(self.image(images, train=train))

    def encode_text(self, tokens):
        return l2_normalize(self.text(tokens))

    def clipped_logit_scale(self):
        return jnp.clip(self.logit_scale, 0.0, math.log(100.0))

    def __call__(self, images, tokens, *, train: bool):
        """-> (image embeddings, text embeddings, clipped logit scale); embeddings are L2-normalised float32."""
        return self.encode_image(images, train=train), self.encode_text(tokens), self.clipped_logit_scale()


def build_image_encoder(mcfg, pos_embed: str | None = None) -> ImageEncoder:
    """The ViT of ``config.model.image`` (``pos_embed`` overrides ``model.image.pos_embed``)."""
    ic = mcfg.image
    if ic.image_size % ic.patch_size:
        raise ValueError(f"model.image.image_size={ic.image_size} is not a multiple of patch_size={ic.patch_size}")
    return ImageEncoder(image_size=ic.image_size, patch_size=ic.patch_size, width=ic.width, depth=ic.depth,
                        num_heads=ic.num_heads, mlp_dim=ic.mlp_dim, embed_dim=mcfg.embed_dim,
                        mask_ratio=float(ic.mask_ratio), dtype=runtime.dtype_of(mcfg.dtype),
                        remat_policy=mcfg.remat_policy, pos_embed=pos_embed or str(ic.pos_embed))


def build_model(mcfg, vocab_size: int, max_len: int) -> FLIP:
    """The FLIP module for ``config.model`` (see configs/flip_tiny.py for the fields)."""
    dtype, tc = runtime.dtype_of(mcfg.dtype), mcfg.text
    image = build_image_encoder(mcfg)
    vs = int(tc.vocab_size) or _round_up(vocab_size, 128)
    if vs < vocab_size:
        raise ValueError(f"model.text.vocab_size={vs} is smaller than the tokenizer's vocabulary ({vocab_size})")
    text = TextEncoder(vocab_size=vs, max_len=max_len, width=tc.width, depth=tc.depth, num_heads=tc.num_heads,
                       mlp_dim=tc.mlp_dim, embed_dim=mcfg.embed_dim, dtype=dtype, remat_policy=mcfg.remat_policy)
    return FLIP(image=image, text=text, temperature_init=mcfg.temperature_init)


def _round_up(n: int, m: int) -> int:
    return (n + m - 1) // m * m


def contrastive_loss(zimg, ztxt, logit_scale, row_sharding: Optional[Callable] = None):
    """Symmetric InfoNCE over the global batch: mean of image->text and text->image cross-entropies.

    ``row_sharding(x)`` (optional) constrains a ``[B, B]`` logits matrix to be sharded by rows over the data
    axis, so each device only materialises ``B/devices x B`` logits.
    """
    scale = jnp.exp(logit_scale)
    li = scale * jnp.einsum("nd,md->nm", zimg, ztxt, preferred_element_type=jnp.float32)
    lt = scale * jnp.einsum("nd,md->nm", ztxt, zimg, preferred_element_type=jnp.float32)
    if row_sharding is not None:
        li, lt = row_sharding(li), row_sharding(lt)
    n = li.shape[0]
    labels = jnp.arange(n)
    loss_i = -jnp.take_along_axis(jax.nn.log_softmax(li, axis=1), labels[:, None], axis=1)
    loss_t = -jnp.take_along_axis(jax.nn.log_softmax(lt, axis=1), labels[:, None], axis=1)
    loss = 0.5 * (jnp.mean(loss_i) + jnp.mean(loss_t))
    acc = jnp.mean((jnp.argmax(li, axis=1) == labels).astype(jnp.float32))
    return loss, {"loss": loss, "i2t_accuracy": acc, "temperature": 1.0 / scale, "logit_scale": logit_scale}
