"""Image position embeddings (fixed 2-D sin-cos or learned), and moving a checkpoint to another image resolution
(CLIPA's image token reduction).

``config.model.image.pos_embed`` picks the kind:

* ``sincos`` (default, FLIP / CLIPA's ``sincos2d``) -- fixed 2-D sin-cos embeddings computed for the grid at hand;
  nothing learned depends on the grid, so a checkpoint runs at any resolution as it is.
* ``learn`` -- a learned ``[grid*grid, width]`` table (parameter ``image/pos_embed``, initialised N(0, 0.02), no
  weight decay).  When parameters are loaded into a model with another grid (``pretrain_dir``, or the next stage
  of a staged run), the table is reshaped to ``[g, g, width]``, resized to the new grid with
  ``model.image.pos_embed_resize`` (``bilinear`` or ``bicubic``, half-pixel centres, ``jax.image.resize``) and
  flattened back.

The patch size, widths and depths must stay the same: only the number of patches changes with the resolution.
"""
from __future__ import annotations

import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from laionprep.errors import UsageError
from laionprep.train_ref import checkpointing

KINDS = ("sincos", "learn")
RESIZE_METHODS = ("bilinear", "bicubic")


def sincos_2d(grid: int, dim: int, temperature: float = 10_000.0) -> np.ndarray:
    """Fixed 2-D sin-cos position embeddings ``[grid*grid, dim]`` (MAE / FLIP style); ``dim`` % 4 == 0."""
    if dim % 4:
        raise ValueError(f"sin-cos position embeddings need a width divisible by 4, got {dim}")
    y, x = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64), indexing="ij")
    omega = 1.0 / temperature ** (np.arange(dim // 4, dtype=np.float64) / (dim // 4))
    out_y = y.reshape(-1)[:, None] * omega[None, :]
    out_x = x.reshape(-1)[:, None] * omega[None, :]
    emb = np.concatenate([np.sin(out_x), np.cos(out_x), np.sin(out_y), np.cos(out_y)], axis=1)
    return emb.astype(np.float32)


def image_pos_embed(module, kind: str, grid: int, width: int):
    """The ``[grid*grid, width]`` position embeddings of the ViT ``module`` (called inside its ``@compact``)."""
    if kind == "sincos":
        return jnp.asarray(sincos_2d(grid, width))
    if kind == "learn":
        return module.param("pos_embed", nn.initializers.normal(0.02), (grid * grid, width))
    raise ValueError(f"unknown model.image.pos_embed {kind!r}; use one of {KINDS}")


def resize(table, new_grid: int, method: str = "bilinear"):
    """A flattened square ``[g*g, D]`` table resized to ``[new_grid**2, D]`` on its 2-D grid."""
    if method not in RESIZE_METHODS:
        raise UsageError(f"unknown position-embedding resize method {method!r}",
                         where="--config.model.image.pos_embed_resize", fix=f"use one of {', '.join(RESIZE_METHODS)}")
    n, d = table.shape
    g = math.isqrt(n)
    if g * g != n:
        raise ValueError(f"position embeddings of {n} entries are not a square grid")
    if g == new_grid:
        return table
    grid = jnp.asarray(table, jnp.float32).reshape(g, g, d)
    out = jax.image.resize(grid, (new_grid, new_grid, d), method=method, antialias=False)
    return out.reshape(new_grid * new_grid, d).astype(table.dtype)


def _checkpoint_shapes(run_dir: str, step: int | None) -> dict:
    """``{path tuple: shape}`` of the ``params`` stored in the newest (or ``step``) checkpoint of ``run_dir``
    (read from the checkpoint's metadata: no array is loaded)."""
    if step is None:
        step = checkpointing.latest_step(run_dir)
    if step is None:
        return {}
    meta = ocp.StandardCheckpointer().metadata(os.path.join(checkpointing.checkpoint_dir(run_dir), str(step),
                                                            "params"))
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
    return {tuple(_key(p) for p in path): tuple(leaf.shape) for path, leaf in flat if hasattr(leaf, "shape")}


def _key(p):
    return getattr(p, "key", getattr(p, "name", getattr(p, "idx", p)))


def load_params(run_dir: str, abstract_params, *, method: str = "bilinear", step: int | None = None, log=None):
    """Like :func:`checkpointing.load_params`, but learned image position embeddings stored for another grid are
    restored at their stored shape and resized to the grid of ``abstract_params``.  -> (params, step)."""
    want = abstract_params["image"].get("pos_embed") if "image" in abstract_params else None
    if want is None:  # fixed sin-cos embeddings: nothing stored to resize
        return checkpointing.load_params(run_dir, abstract_params, step=step)
    if step is None:  # look the step up once, for the shapes and the load
        step = checkpointing.latest_step(run_dir)
    have = _checkpoint_shapes(run_dir, step).get(("image", "pos_embed"))
    if have is None or tuple(have) == tuple(want.shape):
        return checkpointing.load_params(run_dir, abstract_params, step=step)
    if len(have) != 2 or have[1] != want.shape[1]:
        raise UsageError(f"the image position embeddings in {run_dir} have shape {have}, this model's {want.shape}",
                         where="--config.pretrain_dir", fix="keep model.image.width the same across stages")
    target = dict(abstract_params)
    target["image"] = dict(target["image"])
    sharding = want.sharding
    if isinstance(sharding, jax.sharding.NamedSharding):  # the stored shape may not split like the new one
        sharding = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
    target["image"]["pos_embed"] = jax.ShapeDtypeStruct(have, want.dtype, sharding=sharding)
    params, pstep = checkpointing.load_params(run_dir, target, step=step)
    new_grid = math.isqrt(want.shape[0])
    resized = jax.jit(lambda t: resize(t, new_grid, method), out_shardings=want.sharding)(params["image"]["pos_embed"])
    params = dict(params)
    params["image"] = dict(params["image"])
    params["image"]["pos_embed"] = resized
    if log:
        log(f"[train] image position embeddings {math.isqrt(have[0])}x{math.isqrt(have[0])} -> {new_grid}x{new_grid} "
            f"({method})")
    return params, pstep
