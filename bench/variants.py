"""Benchmarks of the trainer variants (issue #7).

CLIPPO section (:func:`bench_clippo_render`): captions/s per CPU core of the Unifont text renderer inside tf.data
(one thread, batches of 128), at CLIPPO's 224 px with 16 px cells and at clippo_tiny's 32 px with 8 px cells, next to
two references measured in the same run on the same thread budget: WordPiece tokenization of the same captions
(what the FLIP trainer does with them instead) and ``tf.io.decode_jpeg`` of as many 224 px demo-generator JPEGs (the
photo half of each training pair).  Captions are LAION-like: one to five demo-generator captions joined, ~80
characters on average (LAION-400M's median is in that range).  Rates are per CPU-second of this process, so other
jobs on the machine bias all rows alike; the median of the rounds is reported.

    PYTHONPATH=src .venv/bin/python bench/variants.py [--json out.json] [--rounds 5]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))


def _captions(n: int, seed: int = 0) -> list[str]:
    from laionprep.demo import synth

    r = random.Random(seed)
    out = []
    for i in range(n):
        parts = [synth.caption(synth.sample(seed, i * 7 + k), r) for k in range(r.randint(1, 5))]
        out.append(", ".join(parts).capitalize() + ".")
    return out


def _jpegs(n: int, size: int = 224) -> list[bytes]:
    import dataclasses

    from laionprep.demo import synth

    out = []
    for i in range(n):
        s = dataclasses.replace(synth.sample(0, i), width=size, height=size)
        buf = io.BytesIO()
        synth.render(s).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _one_thread(ds):
    from laionprep._env import import_tf

    tf = import_tf()
    o = tf.data.Options()
    o.threading.private_threadpool_size = 1
    o.threading.max_intra_op_parallelism = 1
    o.deterministic = True
    return ds.with_options(o)


def _rate(ds, n_batches: int, batch: int, warmup: int = 2) -> float:
    """Items per CPU-second of this process."""
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    c0 = time.process_time()
    for _ in range(n_batches):
        next(it)
    return n_batches * batch / (time.process_time() - c0)


def bench_clippo_render(args) -> dict:
    """Renderer captions/CPU-s at 224/16 and 32/8 vs WordPiece tokenization and JPEG decoding, one thread."""
    from laionprep._env import import_tf
    from laionprep.train_ref import text_render, tokenizer as tokenizer_lib

    tf = import_tf()
    caps = _captions(args.captions)
    words = sorted({w.strip(",.").lower() for c in caps for w in c.split()} - {""})
    letters = sorted(set("".join(words)))
    vocab = list(dict.fromkeys(tokenizer_lib.RESERVED_TOKENS + [",", "."] + letters + ["##" + c for c in letters]
                               + words))  # every caption word is one token
    tok = tokenizer_lib.Tokenizer(vocab, 32)
    jpegs = _jpegs(args.captions)
    B = args.batch
    cap_ds = tf.data.Dataset.from_tensor_slices(caps).repeat().batch(B)
    render224 = text_render.TextRenderer(args.unifont_path, image_size=224, cell_size=16)
    render32 = text_render.TextRenderer(args.unifont_path, image_size=32, cell_size=8)

    def touch(x):  # consume the output without moving it out of the pipeline
        return tf.reduce_sum(tf.cast(x[:, ::7, ::7, 0], tf.int32))

    pipes = {
        "render_224px_16px_cells": lambda: _one_thread(cap_ds.map(lambda c: touch(render224.tokenize(c))).prefetch(2)),
        "render_32px_8px_cells": lambda: _one_thread(cap_ds.map(lambda c: touch(render32.tokenize(c))).prefetch(2)),
        "wordpiece_tokenize_32": lambda: _one_thread(cap_ds.map(lambda c: tf.reduce_sum(tok.tokenize(c))).prefetch(2)),
        "decode_jpeg_224px": lambda: _one_thread(
            tf.data.Dataset.from_tensor_slices(jpegs).repeat()
            .map(lambda b: tf.io.decode_jpeg(b, channels=3)).batch(B).map(touch).prefetch(2)),
    }
    rates: dict[str, list[float]] = {k: [] for k in pipes}
    for r in range(args.rounds):
        for k, make in pipes.items():
            rates[k].append(_rate(make(), args.batches, B))
        print(f"  round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]:.0f}/CPU-s" for k, v in rates.items()),
              flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {"captions": len(caps), "mean_chars": sum(map(len, caps)) / len(caps), "batch": B,
            "per_cpu_s": med, "all_rounds": rates,
            "render224_vs_tokenize": med["render_224px_16px_cells"] / med["wordpiece_tokenize_32"],
            "render224_vs_decode_jpeg": med["render_224px_16px_cells"] / med["decode_jpeg_224px"],
            "render32_vs_decode_jpeg": med["render_32px_8px_cells"] / med["decode_jpeg_224px"]}


def print_clippo(c: dict) -> None:
    m = c["per_cpu_s"]
    print(f"CLIPPO text rendering (one tf.data thread, batch {c['batch']}, {c['captions']} LAION-like captions, "
          f"mean {c['mean_chars']:.0f} chars), per CPU core:")
    print(f"  render 224 px, 16 px cells (clippo_b16): {m['render_224px_16px_cells']:.0f} captions/s")
    print(f"  render  32 px,  8 px cells (clippo_tiny): {m['render_32px_8px_cells']:.0f} captions/s")
    print(f"  reference: WordPiece tokenize (32 tokens): {m['wordpiece_tokenize_32']:.0f} captions/s  "
          f"-> rendering at 224 px is {c['render224_vs_tokenize']:.2f}x its rate")
    print(f"  reference: decode_jpeg of 224 px JPEGs: {m['decode_jpeg_224px']:.0f} images/s  "
          f"-> rendering at 224 px is {c['render224_vs_decode_jpeg']:.2f}x its rate")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captions", type=int, default=1024, help="distinct captions (and JPEGs) cycled through")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--batches", type=int, default=16, help="batches per timed round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--unifont-path", default="", help="Unifont .hex (default: the system's)")
    ap.add_argument("--skip-clippo", action="store_true")
    ap.add_argument("--json", default="", help="also write the results here")
    args = ap.parse_args(argv)
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()} {os.cpu_count()} cores"}
    try:
        res["load_average_at_start"] = os.getloadavg()
    except OSError:
        pass
    if not args.skip_clippo:
        print("CLIPPO text renderer:", flush=True)
        res["clippo"] = bench_clippo_render(args)
    print()
    print(f"trainer variants benchmark, {res['date']}, {res['machine']}")
    if "clippo" in res:
        print_clippo(res["clippo"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
