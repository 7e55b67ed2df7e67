"""CLIPPO's text input: captions rendered into images with GNU Unifont bitmap glyphs, inside ``tf.data``.

CLIPPO (Tschannen, Mustafa, Houlsby, *Image-and-Language Understanding from Pixels Only*) has no tokenizer and no
text tower: a caption is drawn as an image and the same ViT that sees the photos encodes it.  This module draws it.

* **Font.**  GNU Unifont's ``.hex`` file (``XXXX:HEX`` per line; 32 hex digits = an 8x16 half-width glyph, 64 = a
  16x16 full-width one), from ``--config.unifont_path`` or the Debian ``unifont`` package
  (``/usr/share/unifont/unifont.hex``; ``make install`` installs it as root).  It is parsed once per process into a
  glyph atlas of 8x16 half-cells, 1 bit per pixel (:func:`load_atlas`, cached), and becomes a ~1.6 MB constant of
  the input pipeline's graph.  No file is downloaded.
* **Layout.**  The image is a grid of ``cell_size`` x ``cell_size`` cells (16 by default: Unifont's native size, no
  resampling; 224 px -> 14 lines of 28 half-width or 14 full-width characters), lines top to bottom from the
  top-left corner.  Text is lower-cased (Unicode-aware) and greedily **word-wrapped** at spaces; a word longer than
  a line is broken between characters.  What does not fit in the last line is dropped (truncated).  Spaces at a
  line break are not carried to the next line; a run of spaces (or other whitespace) counts as one space.
* **Characters.**  A half-width glyph takes half a cell, a full-width glyph (CJK, most symbols Unifont draws 16 px
  wide) a whole cell; one is never split across lines.  Whitespace and control characters are drawn as a space.  A
  code point the font has no glyph for (and everything outside the Basic Multilingual Plane, which ``unifont.hex``
  covers) is drawn as U+FFFD (the replacement character), so missing text is visible as such, never silently
  dropped.  Invalid UTF-8 decodes to U+FFFD too.  Each code point is one glyph: no shaping, no combining.
* **Colours.**  Dark text (``text_brightness``, 0) on grey (``background_brightness``, 127), grey replicated to
  RGB, uint8 -- like a photo, so it goes through the same normalisation and the same ViT.
* **Other sizes.**  ``cell_size`` 4 or 8 draws the 16 px glyphs and averages 4x4 / 2x2 blocks (grey-level
  anti-aliased glyphs: more text in small images, used by ``clippo_tiny``'s 32 px images); multiples of 16 repeat
  pixels.

Everything is batched tensor ops (decode, table lookup, a line-breaking pass unrolled over the lines of the image,
one scatter and one gather): no per-character Python.  :class:`TextRenderer` has the Tokenizer's interface
(``tokenize(captions)`` inside ``tf.data``, ``renderer(list_of_str)`` eagerly), so the input pipeline and the
zero-shot evaluation use it in place of the tokenizer.
"""
from __future__ import annotations

import functools
import os
from typing import Sequence

import numpy as np

from laionprep._env import import_tf
from laionprep.errors import DataError, UsageError

# Where Debian / Ubuntu (package `unifont`) and some other systems put the .hex font.
UNIFONT_SEARCH_PATHS = (
    "/usr/share/unifont/unifont.hex",
    "/usr/share/fonts/unifont/unifont.hex",
    "/usr/local/share/unifont/unifont.hex",
)
GLYPH_H = 16  # Unifont glyphs are 16 px high, 8 (half-width) or 16 (full-width) wide
HALF_W = 8
REPLACEMENT = 0xFFFD
BMP = 0x10000


def find_unifont(path: str = "") -> str:
    """The Unifont ``.hex`` file to use: ``path`` if given (it must exist), else the first system location found."""
    tf = import_tf()
    fix = ("install GNU Unifont: `apt-get install unifont` (or `make install`, which installs it when run as root), "
           "or point at a unifont .hex file with --config.unifont_path=FILE")
    if path:
        if not tf.io.gfile.exists(path):
            raise UsageError(f"Unifont file not found: {path}", where="--config.unifont_path", fix=fix)
        return path
    for cand in UNIFONT_SEARCH_PATHS:
        if os.path.isfile(cand):
            return cand
    raise UsageError("GNU Unifont (unifont.hex) is needed to render captions as images (CLIPPO) and was not found in "
                     + ", ".join(UNIFONT_SEARCH_PATHS), where="--config.unifont_path", fix=fix)


@functools.lru_cache(maxsize=4)
def load_atlas(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse a Unifont ``.hex`` file.

    Returns ``(halves, table)``: ``halves`` uint8 ``[H, 16]`` -- 8x16 half-cells, one byte (8 pixels, most
    significant bit left) per pixel row; half-cell 0 is blank -- and ``table`` int32 ``[65536]``: for each BMP code
    point ``2 * first_half + (width - 1)`` with width 1 (half-width) or 2 (full-width) half-cells.  Code points the
    font lacks map to U+FFFD's glyph (or blank if even that is missing); whitespace and control characters to blank.
    """
    tf = import_tf()
    with tf.io.gfile.GFile(path, "rb") as f:
        lines = f.read().split(b"\n")
    cps, hexes = [], []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith(b"#"):
            continue
        cp, sep, bits = line.partition(b":")
        try:
            cpi = int(cp, 16)
        except ValueError:
            cpi = -1
        if not sep or cpi < 0 or len(bits) not in (32, 64):
            raise DataError(f"{path} line {n} is not a Unifont .hex glyph (CODEPOINT:32 or 64 hex digits): "
                            f"{line[:60]!r}", where=f"{path}:{n}",
                            fix="use GNU Unifont's unifont.hex (Debian package unifont) or --config.unifont_path")
        if cpi < BMP:
            cps.append(cpi)
            hexes.append(bits)
    if not cps:
        raise DataError(f"{path} holds no glyphs", where=path, fix="use GNU Unifont's unifont.hex")
    widths = np.array([len(h) // 32 for h in hexes], np.int32)  # 1 or 2 half-cells
    try:
        raw = np.frombuffer(bytes.fromhex(b"".join(hexes).decode("ascii")), np.uint8)
    except ValueError as e:
        raise DataError(f"{path} has a glyph with non-hex digits", where=path,
                        fix="use GNU Unifont's unifont.hex") from e
    first = 1 + np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)  # after the blank half 0
    halves = np.zeros((1 + int(widths.sum()), GLYPH_H), np.uint8)
    offs = np.concatenate([[0], np.cumsum(widths * 16)[:-1]])
    half_mask = widths == 1
    # half-width glyphs: 16 bytes, one per pixel row
    idx = offs[half_mask][:, None] + np.arange(16)[None, :]
    halves[first[half_mask]] = raw[idx]
    # full-width glyphs: 32 bytes, two per pixel row (left, right)
    fidx = offs[~half_mask][:, None] + np.arange(32)[None, :]
    full = raw[fidx].reshape(-1, 16, 2)
    halves[first[~half_mask]] = full[:, :, 0]
    halves[first[~half_mask] + 1] = full[:, :, 1]

    table = np.zeros(BMP, np.int64)  # default: blank
    codes = np.array(cps, np.int64)
    packed = 2 * first + (widths - 1)
    lookup = dict(zip(cps, packed.tolist()))
    missing = lookup.get(REPLACEMENT, 0)
    table[:] = missing
    table[codes] = packed
    blank = [c for c in range(BMP) if c < 0x20 or 0x7F <= c < 0xA0 or (0xD800 <= c < 0xE000)
             or chr(c).isspace()]
    table[blank] = 0  # blank, half-width
    return halves, table.astype(np.int32)


class TextRenderer:
    """Captions -> uint8 ``[n, image_size, image_size, 3]`` images of their text (see the module docstring)."""

    def __init__(self, unifont_path: str = "", *, image_size: int = 224, cell_size: int = 16, lower: bool = True,
                 text_brightness: int = 0, background_brightness: int = 127):
        if not (cell_size >= 4 and (GLYPH_H % cell_size == 0 or cell_size % GLYPH_H == 0)):
            raise UsageError(f"text_render.cell_size={cell_size} is not supported",
                             where="--config.text_render.cell_size",
                             fix="use 16 (Unifont's own size), 4 or 8 (downsampled), or a multiple of 16")
        if image_size < cell_size:
            raise UsageError(f"image size {image_size} is smaller than one text cell ({cell_size} px)",
                             where="--config.text_render.cell_size", fix="use a smaller cell_size or larger images")
        for name, v in (("text_brightness", text_brightness), ("background_brightness", background_brightness)):
            if not 0 <= v <= 255:
                raise UsageError(f"text_render.{name}={v} is not in 0..255", where=f"--config.text_render.{name}")
        self.path = find_unifont(unifont_path)
        self.image_size = int(image_size)
        self.cell_size = int(cell_size)
        self.lower = bool(lower)
        self.text_brightness = int(text_brightness)
        self.background_brightness = int(background_brightness)
        self.rows = self.image_size // self.cell_size      # lines of text
        self.cols = 2 * (self.image_size // self.cell_size)  # half-cells per line
        self._halves, self._table = load_atlas(self.path)

    # The Tokenizer's interface, so that the input pipeline and the evaluation take either.
    def tokenize(self, captions):
        return self.render(captions)

    def __call__(self, captions: Sequence[str]) -> np.ndarray:
        """Eager convenience: a list of strings -> numpy uint8 ``[n, S, S, 3]``."""
        return self.render(list(captions)).numpy()

    def layout(self, captions):
        """Where each character goes.  Returns ``(glyph, row, col, keep)``: int32 ``[n, K]`` packed glyph entries
        (``2 * first_half + width - 1``), line and half-cell column of each character, and whether it is drawn."""
        tf = import_tf()
        captions = tf.convert_to_tensor(captions, tf.string)
        # one space for every run of whitespace / control characters: then a line break skips exactly one
        # character, and the first K = rows * (cols + 1) + 1 code points hold everything that can be drawn (a
        # fixed K keeps every shape static)
        captions = tf.strings.regex_replace(captions, r"[\s\p{Z}\p{Cc}]+", " ")
        if self.lower:  # (after the replace: the UTF-8 lower-casing op stops at a NUL byte)
            captions = tf.strings.lower(captions, encoding="utf-8")
        cps = tf.strings.unicode_decode(captions, "UTF-8", errors="replace", replacement_char=REPLACEMENT)
        cps = cps.to_tensor(default_value=-1, shape=[None, self.rows * (self.cols + 1) + 1])  # [n, K]
        valid = cps >= 0
        safe = tf.where(valid & (cps < BMP), cps, REPLACEMENT)
        packed = tf.gather(tf.constant(self._table), safe)
        packed = tf.where(valid, packed, 0)
        width = tf.where(valid, packed % 2 + 1, 0)
        space = packed == 0  # blank glyph: whitespace, control characters, padding
        ink = valid & ~space
        u_end = tf.cumsum(width, axis=1)  # half-cell offsets of each character in one endless line
        u_start = u_end - width
        prev_ink = tf.pad(ink[:, :-1], [[0, 0], [1, 0]])
        next_ink = tf.pad(ink[:, 1:], [[0, 0], [0, 1]])
        word_start = ink & ~prev_ink
        word_end = ink & ~next_ink
        big = tf.constant(2 ** 30, tf.int32)
        cols = tf.constant(self.cols, tf.int32)

        def min_where(mask, x):
            return tf.reduce_min(tf.where(mask, x, big), axis=1)

        def max_where(mask, x):
            return tf.reduce_max(tf.where(mask, x, -1), axis=1)

        # Greedy word wrap, one unrolled step per line of the image, all captions at once.
        s = min_where(word_start, u_start)  # where the current line starts (big: nothing left)
        starts = []
        for _ in range(self.rows):
            starts.append(s)
            s1 = s[:, None]
            # last whole word that ends within this line
            e_word = max_where(word_end & (u_end > s1) & (u_end - s1 <= cols), u_end)
            # no whole word fits (a word longer than a line): break it after the last character that fits
            e_char = max_where(valid & (u_start >= s1) & (u_end - s1 <= cols), u_end)
            nxt_word = min_where(word_start & (u_start >= e_word[:, None]), u_start)
            s = tf.where(s >= big, big, tf.where(e_word >= 0, nxt_word, tf.maximum(e_char, s + 1)))
        starts = tf.stack(starts, axis=1)  # [n, rows], non-decreasing
        row = tf.reduce_sum(tf.cast(starts[:, None, :] <= u_start[:, :, None], tf.int32), axis=2) - 1
        line_start = tf.gather(starts, tf.maximum(row, 0), batch_dims=1)
        col = u_start - line_start
        keep = ink & (row >= 0) & (row < self.rows) & (col >= 0) & (col + width <= cols)
        return packed, row, col, keep

    def render(self, captions):
        """``captions``: a 1-D string tensor (or list).  Returns uint8 ``[n, S, S, 3]``."""
        tf = import_tf()
        packed, row, col, keep = self.layout(captions)
        n = tf.shape(packed)[0]
        first = packed // 2
        wide = packed % 2 == 1
        slots = self.rows * self.cols
        # half-cell slot -> atlas half-cell; a full-width glyph fills two neighbouring slots
        bidx = tf.broadcast_to(tf.range(n)[:, None], tf.shape(packed))
        slot = row * self.cols + col
        sel = tf.where(keep)
        sel2 = tf.where(keep & wide)
        idx = tf.concat([tf.stack([tf.gather_nd(bidx, sel), tf.gather_nd(slot, sel)], 1),
                         tf.stack([tf.gather_nd(bidx, sel2), tf.gather_nd(slot, sel2) + 1], 1)], 0)
        vals = tf.concat([tf.gather_nd(first, sel), tf.gather_nd(first, sel2) + 1], 0)
        grid = tf.tensor_scatter_nd_update(tf.zeros([n, slots], tf.int32), idx, vals)
        bits = tf.cast(tf.gather(tf.constant(self._halves), grid), tf.int32)  # [n, slots, 16]: a byte per pixel row
        bits = tf.transpose(tf.reshape(bits, [n, self.rows, self.cols, GLYPH_H]), [0, 1, 3, 2])  # [n, rows, 16, cols]
        h, w = self.rows * GLYPH_H, self.cols * HALF_W
        bg, fg = self.background_brightness, self.text_brightness
        if self.cell_size >= GLYPH_H:  # binary glyphs: each byte of a glyph row -> its 8 RGB pixels, in place
            img = tf.reshape(tf.gather(tf.constant(_byte_pixels(fg, bg)), bits), [n, h, w, 3])
            if self.cell_size > GLYPH_H:
                f = self.cell_size // GLYPH_H
                img = tf.repeat(tf.repeat(img, f, axis=1), f, axis=2)
        else:  # ink coverage 0/1, averaged over f x f blocks: anti-aliased smaller glyphs
            ink = tf.reshape(tf.gather(tf.constant(_byte_pixels(1.0, 0.0, np.float32)[:, :, 0]), bits), [n, h, w])
            f = GLYPH_H // self.cell_size
            ink = tf.reduce_mean(tf.reshape(ink, [n, h // f, f, w // f, f]), axis=[2, 4])
            img = tf.cast(tf.round(float(bg) + float(fg - bg) * ink), tf.uint8)
            img = tf.broadcast_to(img[..., None], [n, h // f, w // f, 3])
        pad = self.image_size - self.rows * self.cell_size  # a remainder narrower than a cell stays background
        if pad:
            img = tf.pad(img, [[0, 0], [0, pad], [0, pad], [0, 0]], constant_values=bg)
        return tf.ensure_shape(img, [None, self.image_size, self.image_size, 3])


@functools.lru_cache(maxsize=8)
def _byte_pixels(on, off, dtype=np.uint8) -> np.ndarray:
    """``[256, 8, 3]``: the 8 RGB pixels (most significant bit left) of each byte value, ``on`` where the bit is set."""
    bits = (np.arange(256)[:, None] >> np.arange(7, -1, -1)[None, :]) & 1
    return np.repeat(np.where(bits == 1, on, off)[:, :, None], 3, axis=2).astype(dtype)


def renderer_from_config(config) -> TextRenderer:
    """The run's renderer: ``config.unifont_path``, ``config.text_render.*``, images of ``model.image.image_size``."""
    r = config.text_render
    return TextRenderer(config.unifont_path, image_size=config.model.image.image_size,
                        cell_size=r.cell_size, lower=r.lower, text_brightness=r.text_brightness,
                        background_brightness=r.background_brightness)
