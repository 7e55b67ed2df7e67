"""Benchmarks of the trainer variants of issue #7, one section each, all in one run.

* ``clipa`` -- training steps/s of CLIPA's low-resolution pre-training (84 px images, captions reduced to 8
  tokens) against the same model at full size (224 px, 32 tokens).  The model is a /14 ViT small enough for a CPU
  (width 192, depth 6, 3 heads; text width 128, depth 2), batch 32, float32, no patch masking: 84 px is 6x6 = 36
  patches, 224 px is 16x16 = 256 (7.1x the tokens; CLIPA's target here: >= 4x the steps/s).  Batches are
  synthetic and already on the devices, so this measures the model step only; the two are timed in interleaved
  rounds and the medians compared, so a machine shared with other work biases both alike (the ratio of steps per
  CPU-second of the process is printed too).  Also: captions/s of the input pipeline's text stage on one thread
  (tokenize, then reduce to 8 tokens by each strategy) next to tokenizing alone.

* ``clippo`` -- captions/s per CPU core of the Unifont text renderer inside tf.data
  (one thread, batches of 128), at CLIPPO's 224 px with 16 px cells and at clippo_tiny's 32 px with 8 px cells, next to
  two references measured in the same run on the same thread budget: WordPiece tokenization of the same captions
  (what the FLIP trainer does with them instead) and ``tf.io.decode_jpeg`` of as many 224 px demo-generator JPEGs (the
  photo half of each training pair).  Captions are LAION-like: one to five demo-generator captions joined, ~80
  characters on average (LAION-400M's median is in that range).  Rates are per CPU-second of this process, so other
  jobs on the machine bias all rows alike; the median of the rounds is reported.

Sections are functions ``name(args) -> dict`` registered in ``SECTIONS``, each printing its own summary lines;
``--sections a b`` runs some of them.

    PYTHONPATH=src .venv/bin/python bench/variants.py                 # every section, ~2 min on 2 CPU cores
    PYTHONPATH=src .venv/bin/python bench/variants.py --sections clipa --json out.json
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))


def _clipa_config(image_size: int, text_len: int, args):
    from laionprep.train_ref import config_lib

    c = config_lib.load_config("flip_tiny")
    c.model.dtype = "float32"
    c.model.embed_dim = 128
    c.model.image.update(image_size=image_size, patch_size=14, width=192, depth=6, num_heads=3, mlp_dim=768,
                         mask_ratio=0.0)
    c.model.text.update(width=128, depth=2, num_heads=2, mlp_dim=512, vocab_size=1024)
    c.tokenizer.max_len = 32
    if text_len < 32:
        c.text_reduction.update(strategy="truncate", length=text_len)
    c.batch_size = args.batch
    c.num_train_steps = 10_000
    c.warmup_steps = 10
    return c


def _compiled_step(cfg, mesh, text_len: int):
    """(jitted train step, initial state, a synthetic device batch) for ``cfg``."""
    from _common import synthetic_batch
    from laionprep.train_ref import models, train

    vocab = cfg.model.text.vocab_size
    batch = synthetic_batch(cfg.batch_size, cfg.model.image.image_size, text_len, vocab, mesh)
    model = models.build_model(cfg.model, vocab, cfg.tokenizer.max_len)
    state, step = train.fresh_state_and_step(model, cfg, mesh)
    return step, state, batch


def bench_text_reduction(args) -> dict:
    """Captions/s of the tf.data text stage (tokenize) with and without each reduction to 8 tokens, one thread."""
    from laionprep._env import import_tf
    from laionprep.testing import synth
    from laionprep.train_ref import text_reduction, tokenizer as tokenizer_lib

    tf = import_tf()
    rnd = random.Random(0)
    captions = [synth.caption(synth.sample(0, i), rnd) for i in range(args.captions)]
    vocab = tokenizer_lib.RESERVED_TOKENS + sorted({w for c in captions for w in c.lower().split()})
    tok = tokenizer_lib.Tokenizer(vocab, 32)
    rates = {}
    variants = ["none", "truncate", "random", "block", "syntax"]
    for strategy in variants:
        red = None if strategy == "none" else text_reduction.TextReducer(
            strategy, 8, cls_id=tok.cls_id, sep_id=tok.sep_id, vocab=tok.vocab)
        ds = tf.data.Dataset.from_tensor_slices(captions).batch(256).enumerate()
        ds = ds.map((lambda i, b: tok.tokenize(b)) if red is None else (lambda i, b, r=red: r(tok.tokenize(b), i)))
        opts = tf.data.Options()
        opts.threading.private_threadpool_size = 1
        ds = ds.with_options(opts)
        for _ in ds:  # warm up (graph building)
            pass
        best = 0.0
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            for _ in ds:
                pass
            best = max(best, len(captions) / (time.perf_counter() - t0))
        rates[strategy] = best
    base = rates["none"]
    return {"captions_per_s": rates, "relative": {k: v / base for k, v in rates.items()},
            "summary": ["  text stage, one tf.data thread, demo captions -> 8 tokens (best of rounds): " + ", ".join(
                f"{k} {v:,.0f}/s ({v / base:.2f}x)" for k, v in rates.items())]}


def bench_clipa(args) -> dict:
    import jax

    from laionprep.train_ref import runtime, text_reduction

    mesh = runtime.make_mesh()
    variants = {"clipa_84px_8tok": (84, 8, args.clipa_low_steps), "full_224px_32tok": (224, 32, args.clipa_steps)}
    runs = {}
    print("CLIPA: training steps/s, 84 px + 8 text tokens vs 224 px + 32 (same /14 model):", flush=True)
    for name, (size, text_len, steps) in variants.items():
        cfg = _clipa_config(size, text_len, args)
        step, state, batch = _compiled_step(cfg, mesh, text_reduction.text_length(cfg))
        t0 = time.time()
        for _ in range(2):  # compile + warm up
            state, m = step(state, batch)
        jax.block_until_ready(m)
        runs[name] = {"step": step, "state": state, "batch": batch, "steps": steps, "rates": [], "cpu_rates": [],
                      "patches": (size // 14) ** 2, "text_tokens": text_len}
        print(f"  {name}: compiled ({time.time() - t0:.1f}s), {(size // 14) ** 2} patches, {text_len} text tokens",
              flush=True)
    for r in range(args.rounds):
        for name, run in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(run["steps"]):
                run["state"], m = run["step"](run["state"], run["batch"])
            jax.block_until_ready(m)
            run["rates"].append(run["steps"] / (time.perf_counter() - t0))
            run["cpu_rates"].append(run["steps"] / (time.process_time() - c0))
        print(f"  round {r + 1}/{args.rounds}: " + ", ".join(f"{n}: {runs[n]['rates'][-1]:.3f} steps/s" for n in runs),
              flush=True)
    low, full = runs["clipa_84px_8tok"], runs["full_224px_32tok"]
    out = {"model": "ViT /14 width 192 depth 6, text width 128 depth 2, float32", "batch_size": args.batch,
           "devices": jax.device_count(), "platform": jax.devices()[0].platform, "variants": {}}
    for name, run in runs.items():
        out["variants"][name] = {"steps_per_s": statistics.median(run["rates"]), "all_rates": run["rates"],
                                 "steps_per_cpu_s": statistics.median(run["cpu_rates"]),
                                 "patches": run["patches"], "text_tokens": run["text_tokens"]}
    speedup = out["variants"]["clipa_84px_8tok"]["steps_per_s"] / out["variants"]["full_224px_32tok"]["steps_per_s"]
    out["speedup"] = speedup
    out["speedup_cpu_time"] = (out["variants"]["clipa_84px_8tok"]["steps_per_cpu_s"]
                               / out["variants"]["full_224px_32tok"]["steps_per_cpu_s"])
    out["token_ratio"] = full["patches"] / low["patches"]
    text = bench_text_reduction(args)
    out["text_reduction"] = text
    out["summary"] = [
        f"CLIPA ({out['model']}, batch {args.batch}, {out['devices']} {out['platform']} device(s)):",
        f"  84 px / 8 tokens: {out['variants']['clipa_84px_8tok']['steps_per_s']:.3f} steps/s;  224 px / 32 tokens: "
        f"{out['variants']['full_224px_32tok']['steps_per_s']:.3f} steps/s;  speed-up {speedup:.2f}x "
        f"(image tokens {out['token_ratio']:.1f}x; target >= 4x: {'met' if speedup >= 4 else 'NOT met'})",
        f"  by CPU time (robust to other jobs on the machine): {out['speedup_cpu_time']:.2f}x",
        *text["summary"],
    ]
    return out


def _captions(n: int, seed: int = 0) -> list[str]:
    from laionprep.testing import synth

    r = random.Random(seed)
    out = []
    for i in range(n):
        parts = [synth.caption(synth.sample(seed, i * 7 + k), r) for k in range(r.randint(1, 5))]
        out.append(", ".join(parts).capitalize() + ".")
    return out


def _jpegs(n: int, size: int = 224) -> list[bytes]:
    import dataclasses

    from laionprep.testing import synth

    out = []
    for i in range(n):
        s = dataclasses.replace(synth.sample(0, i), width=size, height=size)
        buf = io.BytesIO()
        synth.render(s).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def bench_clippo_render(args) -> dict:
    """Renderer captions/CPU-s at 224/16 and 32/8 vs WordPiece tokenization and JPEG decoding, one thread."""
    from _common import one_thread, pipeline_rate
    from laionprep._env import import_tf
    from laionprep.train_ref import text_render, tokenizer as tokenizer_lib

    tf = import_tf()
    caps = _captions(args.render_captions)
    words = sorted({w.strip(",.").lower() for c in caps for w in c.split()} - {""})
    letters = sorted(set("".join(words)))
    vocab = list(dict.fromkeys(tokenizer_lib.RESERVED_TOKENS + [",", "."] + letters + ["##" + c for c in letters]
                               + words))  # every caption word is one token
    tok = tokenizer_lib.Tokenizer(vocab, 32)
    jpegs = _jpegs(args.render_captions)
    B = args.render_batch
    cap_ds = tf.data.Dataset.from_tensor_slices(caps).repeat().batch(B)
    render224 = text_render.TextRenderer(args.unifont_path, image_size=224, cell_size=16)
    render32 = text_render.TextRenderer(args.unifont_path, image_size=32, cell_size=8)

    def touch(x):  # consume the output without moving it out of the pipeline
        return tf.reduce_sum(tf.cast(x[:, ::7, ::7, 0], tf.int32))

    pipes = {
        "render_224px_16px_cells": lambda: one_thread(cap_ds.map(lambda c: touch(render224.tokenize(c))).prefetch(2)),
        "render_32px_8px_cells": lambda: one_thread(cap_ds.map(lambda c: touch(render32.tokenize(c))).prefetch(2)),
        "wordpiece_tokenize_32": lambda: one_thread(cap_ds.map(lambda c: tf.reduce_sum(tok.tokenize(c))).prefetch(2)),
        "decode_jpeg_224px": lambda: one_thread(
            tf.data.Dataset.from_tensor_slices(jpegs).repeat()
            .map(lambda b: tf.io.decode_jpeg(b, channels=3)).batch(B).map(touch).prefetch(2)),
    }
    rates: dict[str, list[float]] = {k: [] for k in pipes}
    for r in range(args.rounds):
        for k, make in pipes.items():
            rates[k].append(pipeline_rate(make(), args.render_batches, B)[0])
        print(f"  round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]:.0f}/CPU-s" for k, v in rates.items()),
              flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {"captions": len(caps), "mean_chars": sum(map(len, caps)) / len(caps), "batch": B,
            "per_cpu_s": med, "all_rounds": rates,
            "render224_vs_tokenize": med["render_224px_16px_cells"] / med["wordpiece_tokenize_32"],
            "render224_vs_decode_jpeg": med["render_224px_16px_cells"] / med["decode_jpeg_224px"],
            "render32_vs_decode_jpeg": med["render_32px_8px_cells"] / med["decode_jpeg_224px"]}


def _clippo_summary(c: dict) -> list[str]:
    m = c["per_cpu_s"]
    return [
        (f"CLIPPO text rendering (one tf.data thread, batch {c['batch']}, {c['captions']} LAION-like captions, "
          f"mean {c['mean_chars']:.0f} chars), per CPU core:"),
        (f"  render 224 px, 16 px cells (clippo_b16): {m['render_224px_16px_cells']:.0f} captions/s"),
        (f"  render  32 px,  8 px cells (clippo_tiny): {m['render_32px_8px_cells']:.0f} captions/s"),
        (f"  reference: WordPiece tokenize (32 tokens): {m['wordpiece_tokenize_32']:.0f} captions/s  "
          f"-> rendering at 224 px is {c['render224_vs_tokenize']:.2f}x its rate"),
        (f"  reference: decode_jpeg of 224 px JPEGs: {m['decode_jpeg_224px']:.0f} images/s  "
          f"-> rendering at 224 px is {c['render224_vs_decode_jpeg']:.2f}x its rate"),
    ]


def bench_clippo(args) -> dict:
    print("CLIPPO text renderer:", flush=True)
    out = bench_clippo_render(args)
    out["summary"] = _clippo_summary(out)
    return out


# name -> function(args) -> dict with a "summary" list of lines.  Other variants add their section here.
SECTIONS = {"clipa": bench_clipa, "clippo": bench_clippo}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    ap.add_argument("--batch", type=int, default=32, help="global batch of the model benchmarks")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--clipa-steps", type=int, default=3, help="224 px steps per timed round")
    ap.add_argument("--clipa-low-steps", type=int, default=12, help="84 px steps per timed round")
    ap.add_argument("--captions", type=int, default=20_000, help="captions for the text-reduction throughput")
    ap.add_argument("--render-captions", type=int, default=1024, help="distinct captions (and JPEGs) the renderer "
                    "benchmark cycles through")
    ap.add_argument("--render-batch", type=int, default=128)
    ap.add_argument("--render-batches", type=int, default=16, help="renderer batches per timed round")
    ap.add_argument("--unifont-path", default="", help="Unifont .hex (default: the system's)")
    ap.add_argument("--json", default="", help="also write the results here")
    args = ap.parse_args(argv)
    from _common import run_info

    res = run_info()
    for name in args.sections:
        res[name] = SECTIONS[name](args)
    print(f"\ntrainer variants benchmark, {res['date']}, {res['machine']}")
    for name in args.sections:
        for line in res[name].get("summary", []):
            print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
