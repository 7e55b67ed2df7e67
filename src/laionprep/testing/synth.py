"""A synthetic mini-LAION: small images of simple coloured objects, captions that describe them, and the
metadata columns of LAION-400M (SAMPLE_ID, URL, TEXT, HEIGHT, WIDTH, LICENSE, NSFW, similarity) — including rows
that the default filters must drop, duplicate and malformed URLs, and URLs that answer 404.

Everything is a pure function of ``(seed, index)``: the image server renders an image from its URL alone, so the
same metadata always downloads to the same bytes, and the labelled evaluation set (one folder per class) is drawn
from the same renderer.  The classes are ``COLORS x SHAPES``; :func:`class_names` gives their prompt names.
"""
from __future__ import annotations

import dataclasses
import io
import math
import random
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw

COLORS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 210, 20),
    "purple": (140, 40, 180),
    "orange": (250, 130, 10),
}
SHAPES = ("circle", "square", "triangle", "star", "cross")
BACKGROUNDS = {"white": (245, 245, 245), "grey": (150, 150, 150), "black": (20, 20, 20), "beige": (225, 210, 180)}
LICENSES = ("?", "creativecommons.org/licenses/by/4.0", "creativecommons.org/licenses/by-sa/3.0")
CAPTION_TEMPLATES = (
    "a photo of a {color} {shape}",
    "a {color} {shape} on a {bg} background",
    "{color} {shape}",
    "a picture of a {size} {color} {shape}",
    "a {size} {color} {shape} drawn on {bg}",
    "clip art of a {color} {shape}",
)


def class_names() -> list[str]:
    """Evaluation class names ('<color> <shape>') in label order, which is the sorted order of the class folders
    ('<color>_<shape>') that ImageNet-style readers (and ``build-tfds --mode image-folder``) number labels by."""
    return sorted(f"{c} {s}" for c in COLORS for s in SHAPES)


@dataclasses.dataclass(frozen=True)
class Sample:
    index: int
    color: str
    shape: str
    background: str
    width: int
    height: int
    fmt: str  # 'jpg' or 'png'
    scale: float  # object size relative to the short side
    cx: float
    cy: float
    angle: float

    @property
    def label(self) -> int:
        return class_names().index(f"{self.color} {self.shape}")

    @property
    def size_word(self) -> str:
        return "small" if self.scale < 0.5 else "large"


def sample(seed: int, index: int) -> Sample:
    """The object drawn for image ``index`` of a generator seeded with ``seed``."""
    r = random.Random(seed * 1_000_003 + index)
    color = r.choice(list(COLORS))
    shape = r.choice(SHAPES)
    bg = r.choice([b for b in BACKGROUNDS if not (b == "black" and color == "purple")])
    if r.random() < 0.1:  # a few images larger than the target size: the downloader shrinks them
        short = r.randint(500, 640)
    else:
        short = r.randint(40, 200)
    aspect = r.uniform(1.0, 1.8)
    long_ = int(short * aspect)
    width, height = (long_, short) if r.random() < 0.6 else (short, long_)
    return Sample(
        index=index, color=color, shape=shape, background=bg, width=width, height=height,
        fmt="png" if r.random() < 0.15 else "jpg", scale=r.uniform(0.35, 0.8),
        cx=r.uniform(0.4, 0.6), cy=r.uniform(0.4, 0.6), angle=r.uniform(0, math.pi / 4),
    )


def _polygon(shape: str, cx: float, cy: float, radius: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        pts = [(math.cos(angle + k * math.pi / 2 + math.pi / 4), math.sin(angle + k * math.pi / 2 + math.pi / 4))
               for k in range(4)]
    elif shape == "triangle":
        corners = [angle + k * 2 * math.pi / 3 - math.pi / 2 for k in range(3)]
        pts = [(math.cos(a), math.sin(a)) for a in corners]
    elif shape == "star":
        pts = []
        for k in range(10):
            rr = 1.0 if k % 2 == 0 else 0.45
            a = angle + k * math.pi / 5 - math.pi / 2
            pts.append((rr * math.cos(a), rr * math.sin(a)))
    elif shape == "cross":
        w = 0.33
        base = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w),
                (-w, -w)]
        ca, sa = math.cos(angle), math.sin(angle)
        pts = [(x * ca - y * sa, x * sa + y * ca) for x, y in base]
    else:
        raise ValueError(shape)
    return [(cx + radius * x, cy + radius * y) for x, y in pts]


def render(s: Sample) -> Image.Image:
    """Draw the sample: one coloured object on a plain background, with a little noise so JPEGs are not trivial."""
    img = Image.new("RGB", (s.width, s.height), BACKGROUNDS[s.background])
    d = ImageDraw.Draw(img)
    short = min(s.width, s.height)
    radius = s.scale * short / 2
    cx, cy = s.cx * s.width, s.cy * s.height
    fill = COLORS[s.color]
    if s.shape == "circle":
        d.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
    else:
        d.polygon(_polygon(s.shape, cx, cy, radius, s.angle), fill=fill)
    rng = np.random.default_rng(s.index)
    arr = np.asarray(img, dtype=np.int16) + rng.integers(-8, 9, size=(s.height, s.width, 1), dtype=np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def encode(s: Sample) -> tuple[bytes, str]:
    """(bytes, content type) of the sample as the server sends it."""
    buf = io.BytesIO()
    img = render(s)
    if s.fmt == "png":
        img.save(buf, format="PNG")
        return buf.getvalue(), "image/png"
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue(), "image/jpeg"


def caption(s: Sample, r: random.Random) -> str:
    return r.choice(CAPTION_TEMPLATES).format(color=s.color, shape=s.shape, bg=s.background, size=s.size_word)


# Row kinds the demo metadata mixes in, with the fraction of rows of each kind.  "ok" rows survive the default
# filters and download; every other kind is dropped (by the prefilter) or fails (at download) for a known reason.
ROW_KINDS = {
    "nsfw": 0.04,            # NSFW tag 'NSFW'            -> prefilter: nsfw
    "low_similarity": 0.06,  # similarity < 0.3           -> prefilter: low_similarity
    "null_similarity": 0.01, # similarity null            -> prefilter: low_similarity (sentinel -1.0)
    "bad_url": 0.01,         # empty or ftp:// URL        -> prefilter: invalid_url
    "empty_caption": 0.01,   # caption ''                 -> prefilter: empty_caption
    "duplicate": 0.02,       # URL of an earlier row      -> prefilter: duplicate_url
    "missing": 0.03,         # URL answers 404            -> download: failed (HTTP 404)
}


def metadata_rows(n: int, base_url: str, seed: int = 0) -> Iterator[dict]:
    """``n`` rows of LAION-400M-shaped metadata pointing at ``base_url`` (the demo server)."""
    r = random.Random(seed)
    kinds = list(ROW_KINDS) + ["ok"]
    weights = list(ROW_KINDS.values()) + [1.0 - sum(ROW_KINDS.values())]
    urls: list[str] = []
    for i in range(n):
        s = sample(seed, i)
        kind = r.choices(kinds, weights)[0] if i > 0 else "ok"
        url = f"{base_url}/img/{seed}/{i}.{s.fmt}"
        text = caption(s, r)
        nsfw = r.choice(["UNLIKELY"] * 8 + ["UNSURE"])
        sim: float | None = round(r.uniform(0.3, 0.45), 4)
        if kind == "nsfw":
            nsfw = "NSFW"
        elif kind == "low_similarity":
            sim = round(r.uniform(0.05, 0.2999), 4)
            text = caption(sample(seed + 1, i), r)  # low similarity: the caption describes something else
        elif kind == "null_similarity":
            sim = None
        elif kind == "bad_url":
            url = r.choice(["", f"ftp://{base_url.split('://', 1)[-1]}/img/{i}.jpg", "not a url"])
        elif kind == "empty_caption":
            text = ""
        elif kind == "duplicate" and urls:
            url = r.choice(urls)
        elif kind == "missing":
            url = f"{base_url}/missing/{seed}/{i}.jpg"
        urls.append(url)
        yield {
            "SAMPLE_ID": 1_000_000 + i, "URL": url, "TEXT": text, "HEIGHT": s.height, "WIDTH": s.width,
            "LICENSE": r.choice(LICENSES), "NSFW": nsfw, "similarity": sim, "_kind": kind,
        }


def write_metadata(out_dir: str, n: int, base_url: str, seed: int = 0, files: int = 2) -> list[str]:
    """Write ``n`` rows as ``files`` parquet files in ``out_dir`` (LAION-400M's schema); returns their paths.

    The ``_kind`` column (why each row should be dropped or kept) is written to a separate ``truth.parquet`` beside
    them so tests and the demo summary can check the accounting against what was generated.
    """
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(out_dir, exist_ok=True)
    rows = list(metadata_rows(n, base_url, seed))
    schema = pa.schema([
        ("SAMPLE_ID", pa.int64()), ("URL", pa.string()), ("TEXT", pa.string()), ("HEIGHT", pa.int32()),
        ("WIDTH", pa.int32()), ("LICENSE", pa.string()), ("NSFW", pa.string()), ("similarity", pa.float64()),
    ])
    paths = []
    per = math.ceil(n / files)
    for k in range(files):
        chunk = rows[k * per:(k + 1) * per]
        if not chunk:
            break
        table = pa.Table.from_pylist([{c: row[c] for c in schema.names} for row in chunk], schema=schema)
        path = os.path.join(out_dir, f"part-{k:05d}.parquet")
        pq.write_table(table, path)
        paths.append(path)
    truth = pa.Table.from_pylist([{"SAMPLE_ID": r_["SAMPLE_ID"], "URL": r_["URL"], "kind": r_["_kind"]} for r_ in rows])
    truth_dir = os.path.join(os.path.dirname(os.path.abspath(out_dir)), "truth")
    os.makedirs(truth_dir, exist_ok=True)
    pq.write_table(truth, os.path.join(truth_dir, f"{os.path.basename(os.path.abspath(out_dir))}.parquet"))
    return paths


def write_eval_folder(out_dir: str, per_class: int, seed: int = 10_000, splits=("val",)) -> dict[str, int]:
    """An ImageNet-style labelled folder ``SPLIT/<color>_<shape>/NNNN.jpg`` of the demo's classes.

    Used as the zero-shot evaluation set.  Also writes ``class_names.txt`` (one prompt name per line, in sorted
    folder order, i.e. label order).  Returns images written per split.
    """
    import os

    counts = {}
    names = class_names()
    with open(os.path.join(_mk(out_dir), "class_names.txt"), "w") as f:
        f.write("\n".join(names) + "\n")
    for si, split in enumerate(splits):
        n = 0
        for label, name in enumerate(names):
            color, shape = name.split(" ")
            d = _mk(os.path.join(out_dir, split, f"{color}_{shape}"))
            for j in range(per_class):
                base = sample(seed + si, label * 100_003 + j)
                dark_on_dark = base.background == "black" and color == "purple"
                s = dataclasses.replace(base, color=color, shape=shape, fmt="jpg",
                                        background="white" if dark_on_dark else base.background)
                data, _ = encode(s)
                with open(os.path.join(d, f"{j:04d}.jpg"), "wb") as f:
                    f.write(data)
                n += 1
        counts[split] = n
    return counts


def _mk(path: str) -> str:
    import os

    os.makedirs(path, exist_ok=True)
    return path
