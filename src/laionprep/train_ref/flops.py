"""Model FLOPs of a training step, and model FLOPs utilisation (MFU).

The count is analytic, from the config, in the usual MFU convention (PaLM, appendix B): the matrix multiplications
of the model (2 FLOPs per multiply-add), a backward pass costing twice the forward, and no FLOPs for
rematerialisation, element-wise work or the optimizer.  So MFU compares the work the model needs with what the
accelerators could do, whatever the implementation recomputes.

Per example, a Transformer layer over ``n`` tokens of width ``d`` with an MLP of width ``m`` costs
``2n(4d^2 + 2dm)`` (QKV, output and MLP projections) ``+ 4n^2 d`` (attention scores and the weighted sum).  The image
tower runs on the *kept* patches only (FLIP's masking: ``int(L * (1 - mask_ratio))`` of ``L``), which is where
FLIP's speed-up comes from; its patch embedding needs no gradient for its input (2x forward, not 3x).  The text
tower runs on every position of its ``text_length`` (padding included, as the model computes it); CLIPPO runs the
shared image tower on the rendered captions instead.  The contrastive logits are two ``[B, E] x [E, B]`` products
over the global batch.

Peak FLOP/s per device (dense bf16) for the kinds this trainer meets; ``peak_flops(kind, override)`` takes an
explicit figure for anything else.
"""
from __future__ import annotations

from laionprep.train_ref import models, text_reduction, variants

# Dense bf16 peak per device, FLOP/s (vendor datasheets).  Keys are matched against jax's ``device_kind``.
PEAK_BF16_FLOPS = {
    "H100": 989e12,  # H100 SXM (the PCIe card: 756e12 -- give --peak-tflops)
    "H200": 989e12,
    "A100": 312e12,
    "L4": 121e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,  # v5e
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,  # v6e (Trillium)
    "TPU v6e": 918e12,
}


def transformer_flops(tokens: int, width: int, depth: int, mlp_dim: int) -> int:
    """Forward FLOPs of ``depth`` Transformer layers over one sequence of ``tokens`` tokens."""
    per_layer = 2 * tokens * (4 * width * width + 2 * width * mlp_dim) + 4 * tokens * tokens * width
    return depth * per_layer


def image_tower_flops(mcfg, *, train: bool = True) -> dict:
    """``{'forward', 'train', 'tokens'}`` per example for the image tower of ``config.model``."""
    ic = mcfg.image
    num_patches = (ic.image_size // ic.patch_size) ** 2
    tokens = models.num_kept(num_patches, float(ic.mask_ratio)) if train else num_patches
    embed = 2 * tokens * ic.patch_size * ic.patch_size * 3 * ic.width
    body = transformer_flops(tokens, ic.width, ic.depth, ic.mlp_dim) + 2 * ic.width * mcfg.embed_dim
    return {"forward": embed + body, "train": 2 * embed + 3 * body, "tokens": tokens}


def text_tower_flops(config) -> dict:
    """``{'forward', 'train', 'tokens'}`` per example for the text side (FLIP/CLIPA text tower, or CLIPPO's
    shared tower on rendered captions)."""
    if variants.get(config).text_tower == "image":  # CLIPPO: the shared ViT encodes the rendered captions
        return image_tower_flops(config.model)
    tc = config.model.text
    tokens = text_reduction.text_length(config)
    fwd = transformer_flops(tokens, tc.width, tc.depth, tc.mlp_dim) + 2 * tc.width * config.model.embed_dim
    return {"forward": fwd, "train": 3 * fwd, "tokens": tokens}


def train_step_flops(config, batch_size: int | None = None) -> dict:
    """Model FLOPs of one training step on the global batch: ``{'image', 'text', 'loss', 'total'}`` and
    ``per_example`` (total / batch)."""
    b = int(batch_size or config.batch_size)
    image = image_tower_flops(config.model)["train"] * b
    text = text_tower_flops(config)["train"] * b
    loss = 3 * 2 * (2 * b * b * config.model.embed_dim)  # two [B,E]x[E,B] logit products, forward + backward
    total = image + text + loss
    return {"image": image, "text": text, "loss": loss, "total": total, "per_example": total / b}


def peak_flops(device_kind: str, override_tflops: float = 0.0) -> float | None:
    """Peak FLOP/s of one device: ``override_tflops`` * 1e12 when given, else the table's figure for
    ``device_kind`` (longest matching key), else None (unknown: MFU is not reported)."""
    if override_tflops:
        return float(override_tflops) * 1e12
    kind = device_kind.lower()
    hits = [k for k in PEAK_BF16_FLOPS if k.lower() in kind]
    return PEAK_BF16_FLOPS[max(hits, key=len)] if hits else None


def mfu(step_flops: float, steps_per_s: float, devices: int, peak_per_device: float | None) -> float | None:
    """Model FLOPs utilisation: achieved model FLOP/s over the peak of all ``devices``."""
    if not peak_per_device:
        return None
    return step_flops * steps_per_s / (devices * peak_per_device)
