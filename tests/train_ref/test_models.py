"""The FLIP model: patch masking, no masking at evaluation, temperature clipping, the contrastive loss."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from laionprep.train_ref import models, optim, pos_embed, train


def _image_encoder(mask_ratio, image_size=32, patch=8):
    return models.ImageEncoder(image_size=image_size, patch_size=patch, width=32, depth=1, num_heads=2, mlp_dim=64,
                               embed_dim=16, mask_ratio=mask_ratio)


def _init(enc, images):
    return jax.jit(lambda: enc.init({"params": jax.random.PRNGKey(1), "mask": jax.random.PRNGKey(2)}, images,
                                    train=True))()["params"]


def _apply(enc, params, images, rng, train_mode):
    """-> (embedding, kept ids or None, the encoder's output sequence length)."""
    @jax.jit
    def run(params, images, rng):
        return enc.apply({"params": params}, images, train=train_mode, rngs={"mask": rng}, mutable=["intermediates"],
                         capture_intermediates=lambda mdl, _: isinstance(mdl, models.Encoder))
    out, state = run(params, images, rng)
    inter = state["intermediates"]
    ids = inter["kept_ids"][0] if "kept_ids" in inter else None
    seq = inter["encoder"]["__call__"][0].shape[1]
    return out, ids, seq


@pytest.mark.parametrize("image_size,patch,ratio", [(32, 8, 0.75), (48, 8, 0.3), (32, 4, 0.9)])
def test_masking_keeps_exactly_int_L_times_1_minus_ratio(image_size, patch, ratio):
    L = (image_size // patch) ** 2
    expected = int(L * (1 - ratio))
    enc = _image_encoder(ratio, image_size, patch)
    images = jax.random.normal(jax.random.PRNGKey(0), (6, image_size, image_size, 3))
    params = _init(enc, images)
    _, ids, seq = _apply(enc, params, images, jax.random.PRNGKey(3), True)
    assert ids.shape == (6, expected)
    assert seq == expected  # the Transformer really runs on the kept tokens only
    ids = np.asarray(ids)
    for row in ids:
        assert len(set(row.tolist())) == expected  # no patch kept twice
        assert row.min() >= 0 and row.max() < L


def test_published_keep_counts():
    assert models.num_kept(196, 0.5) == 98  # ViT-B/16, L/16 at 224 px
    assert models.num_kept(196, 0.75) == 49
    assert models.num_kept(256, 0.5) == 128  # ViT-H/14 at 224 px
    assert models.num_kept(196, 0.0) == 196


def test_masks_differ_across_examples_and_steps():
    enc = _image_encoder(0.5)
    images = jnp.zeros((8, 32, 32, 3))  # identical images: any difference comes from the masks
    params = _init(enc, images)
    base = jax.random.PRNGKey(0)
    out0, ids0, _ = _apply(enc, params, images, train.step_rng(base, 0), True)
    out1, ids1, _ = _apply(enc, params, images, train.step_rng(base, 1), True)
    sets0 = [frozenset(r.tolist()) for r in np.asarray(ids0)]
    sets1 = [frozenset(r.tolist()) for r in np.asarray(ids1)]
    assert len(set(sets0)) == 8  # every example of the batch has its own subset of patches
    assert all(a != b for a, b in zip(sets0, sets1))  # and a new one at the next step
    assert not np.allclose(np.asarray(out0[0]), np.asarray(out0[1]))  # so identical images embed differently
    # the same step redone (e.g. after a resume) draws the same masks
    _, ids0b, _ = _apply(enc, params, images, train.step_rng(base, 0), True)
    np.testing.assert_array_equal(np.asarray(ids0), np.asarray(ids0b))


def test_no_masking_at_evaluation():
    masked = _image_encoder(0.75)
    unmasked = _image_encoder(0.0)
    images = jax.random.normal(jax.random.PRNGKey(0), (4, 32, 32, 3))
    params = _init(masked, images)
    e1, ids, seq = _apply(masked, params, images, jax.random.PRNGKey(5), False)
    e2, _, _ = _apply(masked, params, images, jax.random.PRNGKey(6), False)
    e3, _, _ = _apply(unmasked, params, images, jax.random.PRNGKey(7), True)
    assert ids is None and seq == 16  # all 16 patches
    np.testing.assert_allclose(np.asarray(e1), np.asarray(e2), rtol=1e-6)  # no randomness at evaluation
    np.testing.assert_allclose(np.asarray(e1), np.asarray(e3), rtol=1e-5, atol=1e-6)
    e4, ids4, _ = _apply(masked, params, images, jax.random.PRNGKey(5), True)
    assert ids4.shape == (4, 4) and not np.allclose(np.asarray(e1), np.asarray(e4))


def _flip(vocab=50):
    from ml_collections import ConfigDict

    mcfg = ConfigDict(dict(dtype="float32", embed_dim=16, remat_policy="none", temperature_init=0.07,
                           image=dict(image_size=32, patch_size=8, width=32, depth=1, num_heads=2, mlp_dim=64,
                                      mask_ratio=0.5, pos_embed="sincos"),
                           text=dict(vocab_size=0, width=32, depth=1, num_heads=2, mlp_dim=64)))
    return models.build_model(mcfg, vocab, 8)


def test_temperature_initialised_and_clipped():
    model = _flip()
    images = jnp.zeros((2, 32, 32, 3))
    tokens = jnp.array([[2, 5, 6, 3, 0, 0, 0, 0], [2, 7, 3, 0, 0, 0, 0, 0]])
    params = jax.jit(lambda: model.init(jax.random.PRNGKey(0), images, tokens, train=False))()["params"]
    apply = jax.jit(lambda p: model.apply({"params": p}, images, tokens, train=False))
    assert float(params["logit_scale"]) == pytest.approx(math.log(1 / 0.07), rel=1e-6)
    assert params["text"]["token_embed"]["embedding"].shape[0] == 128  # vocab 50 rounded up
    for raw, want in [(10.0, math.log(100.0)), (-3.0, 0.0), (2.0, 2.0)]:
        p = dict(params, logit_scale=jnp.asarray(raw))
        zi, zt, ls = apply(p)
        assert float(ls) == pytest.approx(want, rel=1e-6)
        np.testing.assert_allclose(np.linalg.norm(np.asarray(zi), axis=1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(np.asarray(zt), axis=1), 1.0, rtol=1e-5)


def test_text_padding_is_ignored():
    model = _flip()
    images = jnp.zeros((1, 32, 32, 3))
    params = jax.jit(lambda: model.init(jax.random.PRNGKey(0), images, jnp.zeros((1, 8), jnp.int32),
                                        train=False))()["params"]
    enc = jax.jit(lambda p, t: model.apply({"params": p}, t, method=models.FLIP.encode_text))
    a = jnp.array([[2, 5, 6, 3, 0, 0, 0, 0]])
    b = jnp.array([[2, 5, 6, 3, 0, 0]])  # same caption, less padding
    za, zb = enc(params, a), enc(params, b)
    np.testing.assert_allclose(np.asarray(za), np.asarray(zb), rtol=1e-5, atol=1e-6)


def _reference_loss(zi, zt, scale):
    def ce(logits):
        logits = logits - logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return -np.mean(np.diag(logp))
    li = scale * zi @ zt.T
    return 0.5 * (ce(li) + ce(li.T))


def test_contrastive_loss_matches_reference():
    rng = np.random.default_rng(0)
    zi = rng.normal(size=(12, 8)).astype(np.float32)
    zt = rng.normal(size=(12, 8)).astype(np.float32)
    zi /= np.linalg.norm(zi, axis=1, keepdims=True)
    zt /= np.linalg.norm(zt, axis=1, keepdims=True)
    ls = math.log(1 / 0.07)
    loss, m = models.contrastive_loss(jnp.asarray(zi), jnp.asarray(zt), jnp.asarray(ls))
    assert float(loss) == pytest.approx(_reference_loss(zi, zt, 1 / 0.07), rel=1e-5)
    assert float(m["temperature"]) == pytest.approx(0.07, rel=1e-5)
    # aligned pairs at a high scale: near-zero loss; the symmetric loss does not depend on which side is which
    low, _ = models.contrastive_loss(jnp.asarray(zi), jnp.asarray(zi), jnp.asarray(math.log(100.0)))
    assert float(low) < 0.05
    swapped, _ = models.contrastive_loss(jnp.asarray(zt), jnp.asarray(zi), jnp.asarray(ls))
    assert float(swapped) == pytest.approx(float(loss), rel=1e-6)


def test_sincos_position_embeddings():
    e = pos_embed.sincos_2d(4, 16)
    assert e.shape == (16, 16)
    np.testing.assert_allclose(e[0], [0, 0, 0, 0, 1, 1, 1, 1] * 2, atol=1e-7)  # position (0, 0)
    assert len({tuple(np.round(r, 5)) for r in e}) == 16  # every position distinct


def test_weight_decay_mask_skips_biases_norms_and_temperature():
    model = _flip()
    params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)),
                                               jnp.zeros((1, 8), jnp.int32), train=False))["params"]
    mask = optim.weight_decay_mask(params)
    flat = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(mask)}
    assert flat["['logit_scale']"] is False
    assert flat["['text']['pos_embed']"] is False
    assert flat["['image']['patch_embed']['kernel']"] is True
    assert flat["['image']['patch_embed']['bias']"] is False
    assert flat["['image']['encoder']['block_00']['ln1']['scale']"] is False
    assert flat["['text']['encoder']['block_00']['attn']['query']['kernel']"] is True


@pytest.mark.parametrize("policy", ["full"])  # "minimal" runs in the training tests
def test_remat_gives_the_same_gradients(policy):
    images = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
    plain, remat = _image_encoder(0.0), _image_encoder(0.0).clone(remat_policy=policy)
    params = jax.jit(lambda: plain.init({"params": jax.random.PRNGKey(1)}, images, train=False))()["params"]

    def grads(enc):
        return jax.jit(jax.grad(lambda p: jnp.sum(enc.apply({"params": p}, images, train=False) ** 2)))(params)

    for a, b in zip(jax.tree_util.tree_leaves(grads(plain)), jax.tree_util.tree_leaves(grads(remat))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
