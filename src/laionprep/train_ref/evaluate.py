"""Zero-shot classification: class names x prompt templates -> averaged, normalised text embeddings -> top-1/top-5.

``evaluate(config, workdir)`` restores the newest checkpoint of ``workdir`` (or of ``config.pretrain_dir`` when
the workdir has none) and evaluates it on ``config.eval.source``: a TFDS classification dataset (``imagenet2012``
when present, or one built with ``build-tfds --mode image-folder``) or an image folder ``DIR/SPLIT/<class>/*``.

Template sets (``config.eval.templates``): ``flip`` (default) -- the 7-template ImageNet ensemble selected in
CLIP's prompt-engineering notebook, our stand-in for FLIP's default set (FLIP's exact list was not available to
check); ``clip80`` -- CLIP's full 80-template ImageNet set; ``simple`` -- ``a photo of a {}.``; or a path to a file
with one template per line (``{}`` = class name).
"""
from __future__ import annotations

import json
import os
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from laionprep._env import import_tf
from laionprep.errors import UsageError
from laionprep.train_ref import checkpointing, input_pipeline, runtime, text_reduction, variants

SIMPLE_TEMPLATES = ("a photo of a {}.",)

FLIP_TEMPLATES = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)

CLIP80_TEMPLATES = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
)

TEMPLATE_SETS = {"flip": FLIP_TEMPLATES, "clip80": CLIP80_TEMPLATES, "simple": SIMPLE_TEMPLATES}


def get_templates(name: str) -> list[str]:
    if name in TEMPLATE_SETS:
        return list(TEMPLATE_SETS[name])
    tf = import_tf()
    if name and tf.io.gfile.exists(name):
        with tf.io.gfile.GFile(name) as f:
            tmpl = [line.strip() for line in f if line.strip()]
        bad = [t for t in tmpl if "{}" not in t]
        if not tmpl or bad:
            raise UsageError(f"template file {name}: every line needs a '{{}}' for the class name", where=name)
        return tmpl
    raise UsageError(f"unknown template set {name!r}", where="--config.eval.templates",
                     fix=f"use one of {', '.join(TEMPLATE_SETS)} or a file with one template per line")


def _encode_text_fn(model, mesh):
    rep = runtime.replicated(mesh)

    @jax.jit
    def enc(params, tokens):
        return model.apply({"params": params}, tokens, method="encode_text")  # FLIP or CLIPPO

    def run(params, tokens: np.ndarray) -> np.ndarray:
        return np.asarray(jax.device_get(enc(params, jax.device_put(tokens, rep))))

    return run


def build_classifier(model, params, tokenizer, class_names: Sequence[str], templates: Sequence[str], mesh,
                     chunk: int = 1024) -> np.ndarray:
    """``[num_classes, embed_dim]`` zero-shot weights: per class, the renormalised mean of its templates' embeddings."""
    enc = _encode_text_fn(model, mesh)
    out = []
    prompts_per_chunk = max(1, chunk // len(templates))
    for i in range(0, len(class_names), prompts_per_chunk):
        names = class_names[i:i + prompts_per_chunk]
        tokens = tokenizer([t.format(c) for c in names for t in templates])
        pad = (-len(tokens)) % 64  # few distinct shapes -> few compilations
        tokens = np.concatenate([tokens, np.zeros((pad, *tokens.shape[1:]), tokens.dtype)]) if pad else tokens
        emb = enc(params, tokens)[: len(names) * len(templates)]
        emb = emb.reshape(len(names), len(templates), -1).mean(axis=1)
        out.append(emb / np.linalg.norm(emb, axis=-1, keepdims=True))
    return np.concatenate(out).astype(np.float32)


def zero_shot(model, params, tokenizer, config, mesh, *, log: Callable[[str], None] | None = None) -> dict:
    """Top-1 / top-5 zero-shot accuracy of ``params`` on ``config.eval`` (all processes take part)."""
    ecfg = config.eval
    image_size = config.model.image.image_size
    local_bs = runtime.check_batch(ecfg.batch_size, "eval.batch_size")
    t0 = time.time()
    data = input_pipeline.eval_dataset(
        ecfg.source, image_size=image_size, batch_size=local_bs, data_dir=ecfg.data_dir, split=ecfg.split,
        process_index=jax.process_index(), process_count=jax.process_count(), crop_fraction=ecfg.crop_fraction,
        class_names_file=ecfg.class_names, image_key=ecfg.image_key, label_key=ecfg.label_key)
    templates = get_templates(ecfg.templates)
    tokenizer = text_reduction.eval_tokenizer(config, tokenizer)  # CLIPA: prompts as short as training's text
    classifier = build_classifier(model, params, tokenizer, data.class_names, templates, mesh)
    k = min(5, len(data.class_names))
    dtype = runtime.dtype_of(config.model.dtype)
    bsh = runtime.batch_sharding(mesh)

    @jax.jit
    def step(params, weights, batch):
        images = input_pipeline.normalize(batch["image"], dtype)
        z = model.apply({"params": params}, images, train=False, method="encode_image")
        logits = z @ weights.T
        _, top = jax.lax.top_k(logits, k)
        label, mask = batch["label"], batch["mask"]
        c1 = jnp.sum((top[:, 0] == label) & mask)
        c5 = jnp.sum(jnp.any(top == label[:, None], axis=1) & mask)
        return c1, c5, jnp.sum(mask)

    weights = jax.device_put(jnp.asarray(classifier), runtime.replicated(mesh))
    c1 = c5 = n = 0
    for batch in data.dataset.as_numpy_iterator():
        r = step(params, weights, runtime.global_batch(batch, bsh))
        c1, c5, n = c1 + int(r[0]), c5 + int(r[1]), n + int(r[2])
    if n != data.num_examples:
        raise RuntimeError(f"evaluated {n} examples, expected {data.num_examples}")
    res = {"top1": c1 / max(n, 1), "top5": c5 / max(n, 1), "num_examples": n, "num_classes": len(data.class_names),
           "chance_top1": 1.0 / len(data.class_names), "templates": len(templates), "seconds": time.time() - t0}
    if log:
        log(f"[eval] zero-shot on {data.description}: top-1 {100 * res['top1']:.2f}%  top-5 {100 * res['top5']:.2f}%"
            f"  ({n} images, {len(data.class_names)} classes, chance {100 / len(data.class_names):.2f}%,"
            f" {len(templates)} templates, {res['seconds']:.1f}s)")
    return res


def evaluate(config, workdir: str) -> dict:
    """Zero-shot evaluation of the newest checkpoint in ``workdir`` (else ``config.pretrain_dir``).

    Writes ``WORKDIR/eval_results.json`` and TensorBoard scalars ``eval/top1``, ``eval/top5``; returns the metrics
    (``top1``, ``top5``, ``num_examples``, ``num_classes``, ``step``, ...).  A staged run is evaluated in its last
    stage's directory: ``runner.evaluate``.
    """
    if tuple(config.stage_order):
        raise ValueError("a staged config (config.stage_order) is evaluated through runner.evaluate")
    runtime.maybe_initialize_distributed(config.distributed)
    tf = import_tf()
    if not config.eval.source:
        raise UsageError("no evaluation dataset", where="--config.eval.source",
                         fix="set --config.eval.source to imagenet2012, a TFDS image-folder dataset or a folder")
    run_dir = workdir
    mngr_dir = checkpointing.checkpoint_dir(workdir)
    has_ckpt = tf.io.gfile.isdir(mngr_dir) and bool(tf.io.gfile.listdir(mngr_dir))
    if not has_ckpt:
        if not config.pretrain_dir:
            raise UsageError(f"no checkpoint in {workdir}", where="--workdir",
                             fix="train first, or set --config.pretrain_dir to a run to evaluate")
        run_dir = config.pretrain_dir
    vocab_dir = run_dir if tf.io.gfile.exists(os.path.join(run_dir, "vocab.txt")) else workdir
    tok, model = variants.text_side(config, vocab_dir, training=False)
    mesh = runtime.make_mesh()
    abstract = variants.abstract_params(model, config)
    shard = runtime.state_shardings(abstract, mesh, config.partition_states)
    params, step = checkpointing.load_params(run_dir, runtime.with_shardings(abstract, shard))
    log = runtime.RunLog(workdir)
    log.print(f"[eval] checkpoint {run_dir} step {step}")
    res = zero_shot(model, params, tok, config, mesh, log=log.print)
    res["step"] = step
    res["checkpoint"] = run_dir
    if log.enabled:
        log.scalars(step, {"top1": res["top1"], "top5": res["top5"]}, prefix="eval/", jsonl="")
        with tf.io.gfile.GFile(os.path.join(workdir, "eval_results.json"), "w") as f:
            json.dump(res, f, indent=2)
    log.close()
    return res
