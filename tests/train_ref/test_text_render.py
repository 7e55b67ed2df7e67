"""CLIPPO's text renderer against the real GNU Unifont file: determinism, legibility (pixels equal the font's own
bitmaps, read here independently of the renderer), layout (wrapping, truncation, wide characters, missing
glyphs), the smaller cell sizes, use inside tf.data, and the errors for a missing or broken font."""
from __future__ import annotations

import functools

import numpy as np
import pytest

from laionprep.errors import DataError, UsageError
from laionprep.train_ref import text_render

FG, BG = 0, 127


@functools.lru_cache(maxsize=None)
def _font_path() -> str:
    try:
        return text_render.find_unifont()
    except UsageError as e:  # the environment lacks the Debian package: say so, loudly
        pytest.fail(f"GNU Unifont is not installed here (`make install` as root installs it): {e}")


@functools.lru_cache(maxsize=None)
def _glyph(codepoint: int) -> np.ndarray:
    """The font's bitmap of ``codepoint`` as 0/1 ``[16, 8 or 16]``, straight from the .hex line."""
    key = f"{codepoint:04X}:"
    with open(_font_path()) as f:
        for line in f:
            if line.startswith(key):
                bits = line.strip().split(":")[1]
                w = 8 if len(bits) == 32 else 16  # px per row
                rows = [int(bits[i * w // 4:(i + 1) * w // 4], 16) for i in range(16)]
                return np.array([[(r >> (w - 1 - x)) & 1 for x in range(w)] for r in rows], np.uint8)
    raise AssertionError(f"U+{codepoint:04X} not in the font")


def _ink(glyph: np.ndarray) -> np.ndarray:
    return np.where(glyph == 1, FG, BG).astype(np.uint8)


@pytest.fixture(scope="module")
def r224():
    return text_render.TextRenderer(_font_path(), image_size=224)


@pytest.fixture(scope="module")
def r64():
    return text_render.TextRenderer(_font_path(), image_size=64)  # 4 lines of 8 half-width characters


def test_fixed_caption_gives_fixed_image(r224):
    caps = ["A photo of a red circle", "the same caption in a batch", "A photo of a red circle"]
    a = r224(caps)
    assert a.shape == (3, 224, 224, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a[0], a[2])  # same caption, same image, whatever its batch neighbours
    again = text_render.TextRenderer(_font_path(), image_size=224)(["A photo of a red circle"])
    np.testing.assert_array_equal(again[0], a[0])
    assert not np.array_equal(a[0], a[1])
    assert set(np.unique(a)) == {FG, BG}  # 16 px cells: binary glyphs, dark text on grey
    np.testing.assert_array_equal(a[..., 0], a[..., 1])  # grey replicated to RGB
    np.testing.assert_array_equal(a[..., 0], a[..., 2])


def test_glyphs_are_the_fonts_bitmaps(r224):
    img = r224(["Ab 中x"])[0, :, :, 0]
    # lower-cased; 'a' in the first half-cell, 'b' in the second, a space, then a full-width glyph on 2 half-cells
    np.testing.assert_array_equal(img[0:16, 0:8], _ink(_glyph(ord("a"))))
    np.testing.assert_array_equal(img[0:16, 8:16], _ink(_glyph(ord("b"))))
    np.testing.assert_array_equal(img[0:16, 16:24], BG)
    np.testing.assert_array_equal(img[0:16, 24:40], _ink(_glyph(0x4E2D)))
    np.testing.assert_array_equal(img[0:16, 40:48], _ink(_glyph(ord("x"))))
    np.testing.assert_array_equal(img[16:], BG)  # one line of text, the rest background
    np.testing.assert_array_equal(img[:, 48:], BG)
    # a composed reference for a whole line: the glyphs side by side
    ref = np.concatenate([_ink(_glyph(ord(c))) for c in "hello, world"], axis=1)
    np.testing.assert_array_equal(r224(["Hello, World"])[0, 0:16, 0:ref.shape[1], 0], ref)


def test_word_wrap_and_long_words(r64):
    # 8 half-width characters per line: "red" "circle" cannot share a line (3 + 1 + 6 > 8)
    _, row, col, keep = [x.numpy()[0] for x in r64.layout(["red circle on grey"])]
    drawn = [(int(r), int(c)) for r, c, k in zip(row, col, keep) if k]
    assert drawn[:3] == [(0, 0), (0, 1), (0, 2)]  # r e d
    assert drawn[3:9] == [(1, c) for c in range(6)]  # circle starts the second line
    assert drawn[9:11] == [(2, 0), (2, 1)]  # "on grey" (7) fits the third line
    assert drawn[11:] == [(2, 3), (2, 4), (2, 5), (2, 6)]
    img = r64(["red circle on grey"])[0, :, :, 0]
    np.testing.assert_array_equal(img[16:32, 0:8], _ink(_glyph(ord("c"))))
    # a word longer than a line is broken between characters
    _, row, col, keep = [x.numpy()[0] for x in r64.layout(["abcdefghijk"])]
    assert [(int(r), int(c)) for r, c, k in zip(row, col, keep) if k] == [(0, c) for c in range(8)] + \
        [(1, 0), (1, 1), (1, 2)]
    # a full-width glyph is never split over two lines: 7 half-cells used, the 2-wide glyph goes to line 2
    _, row, col, keep = [x.numpy()[0] for x in r64.layout(["abcdefg中"])]
    assert (int(row[7]), int(col[7]), bool(keep[7])) == (1, 0, True)


def test_text_is_truncated_to_fit(r64, r224):
    long = " ".join(["triangle"] * 200)
    img = r64([long])
    assert img.shape == (1, 64, 64, 3)
    _, row, col, keep = [x.numpy()[0] for x in r64.layout([long])]
    assert keep.sum() == 4 * 8 and row[keep].max() == 3  # four full lines of "triangle", the rest dropped
    assert (img[0, 48:64, :, 0] == FG).any()  # the last line is drawn
    # 224 px: 14 lines of 28 characters; an unbroken string fills the grid exactly
    _, row, col, keep = [x.numpy()[0] for x in r224.layout(["x" * 1000])]
    assert keep.sum() == 14 * 28 and row[keep].max() == 13 and col[keep].max() == 27
    # a size that is not a multiple of the cell: whole cells only, the remainder stays background
    odd = text_render.TextRenderer(_font_path(), image_size=40)(["x" * 100])
    assert odd.shape == (1, 40, 40, 3)
    assert (odd[0, 16:32, 24:32] == FG).any() and (odd[0, 32:] == BG).all() and (odd[0, :, 32:] == BG).all()


def test_missing_glyphs_whitespace_and_control_characters(r224):
    img = r224(["\U0001F600\ue000a\tb\x00c"])[0, :, :, 0]
    fffd = _ink(_glyph(0xFFFD))
    np.testing.assert_array_equal(img[0:16, 0:8], fffd)  # outside the BMP: the replacement glyph
    table = text_render.load_atlas(_font_path())[1]
    if table[0xE000] == table[0xFFFD]:  # private use: not in Unifont's main file -> replacement glyph
        np.testing.assert_array_equal(img[0:16, 8:16], fffd)
    np.testing.assert_array_equal(img[0:16, 16:24], _ink(_glyph(ord("a"))))
    np.testing.assert_array_equal(img[0:16, 24:32], BG)  # tab: a space
    np.testing.assert_array_equal(img[0:16, 32:40], _ink(_glyph(ord("b"))))
    np.testing.assert_array_equal(img[0:16, 40:48], BG)  # NUL: a space
    np.testing.assert_array_equal(img[0:16, 48:56], _ink(_glyph(ord("c"))))
    # invalid UTF-8 is the replacement character too; an empty caption is a blank image
    out = r224.render([b"\xff", b""]).numpy()[..., 0]
    np.testing.assert_array_equal(out[0, 0:16, 0:8], fffd)
    np.testing.assert_array_equal(out[1], BG)


def test_smaller_cells_average_the_16px_glyphs(r64):
    caps = ["a purple star drawn on beige", "green cross"]
    big = r64(caps)[..., 0].astype(np.float64)
    small = text_render.TextRenderer(_font_path(), image_size=32, cell_size=8)(caps)[..., 0]
    expect = big.reshape(2, 32, 2, 32, 2).mean(axis=(2, 4))
    np.testing.assert_array_equal(small, np.round(expect).astype(np.uint8))  # same layout, 2x2 means
    assert len(np.unique(small)) > 2  # grey levels: anti-aliased
    quarter = text_render.TextRenderer(_font_path(), image_size=16, cell_size=4)(caps)
    assert quarter.shape == (2, 16, 16, 3)
    bigger = text_render.TextRenderer(_font_path(), image_size=128, cell_size=32)(caps)[..., 0]
    np.testing.assert_array_equal(bigger[:, ::2, ::2], r64(caps)[..., 0])  # pixels repeated 2x2


def test_inside_tf_data_equals_eager(r224):
    from laionprep._env import import_tf

    tf = import_tf()
    caps = ["a photo of a red circle", "clip art of a blue star", "yellow square", "é à ü — ok"]
    ds = tf.data.Dataset.from_tensor_slices(caps).batch(2).map(r224.tokenize)
    got = np.concatenate([b.numpy() for b in ds])
    np.testing.assert_array_equal(got, r224(caps))


def test_missing_font_names_both_ways_to_provide_it(tmp_path, monkeypatch):
    with pytest.raises(UsageError) as e:
        text_render.TextRenderer(str(tmp_path / "nope.hex"))
    msg = str(e.value)
    assert "nope.hex" in msg and "apt-get install unifont" in msg and "--config.unifont_path" in msg
    monkeypatch.setattr(text_render, "UNIFONT_SEARCH_PATHS", (str(tmp_path / "a.hex"), str(tmp_path / "b.hex")))
    with pytest.raises(UsageError) as e:
        text_render.find_unifont("")
    msg = str(e.value)
    assert "b.hex" in msg and "apt-get install unifont" in msg and "make install" in msg and \
        "--config.unifont_path=FILE" in msg


def test_broken_font_file_and_bad_options(tmp_path):
    bad = tmp_path / "bad.hex"
    bad.write_text("0041:0000000018242442427E424242420000\n0042:XYZ\n")
    with pytest.raises(DataError, match=r"bad.hex line 2"):
        text_render.load_atlas(str(bad))
    good = tmp_path / "small.hex"  # a two-glyph font: every other code point is blank (no U+FFFD either)
    good.write_text("0041:0000000018242442427E424242420000\n0061:0000000000003C42023E4242463A0000\n")
    r = text_render.TextRenderer(str(good), image_size=32, lower=False)
    img = r(["Aa?"])[0, :, :, 0]
    assert (img[0:16, 0:8] == FG).any() and (img[0:16, 8:16] == FG).any()
    np.testing.assert_array_equal(img[0:16, 16:24], BG)
    with pytest.raises(UsageError, match="cell_size"):
        text_render.TextRenderer(_font_path(), cell_size=12)
    with pytest.raises(UsageError, match="text_brightness"):
        text_render.TextRenderer(_font_path(), text_brightness=300)
