"""The fetcher reads JPEG and PNG sizes from the header bytes itself (Pillow's open was most of its CPU per URL):
the same width, height and format as Pillow on every kind of file, and Pillow (with its reasons) for the rest."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from laionprep.ingest import safe_fetch as sf

OPTS = sf.FetchOptions(allow_private_addresses=True)


def _encode(mode: str, size: tuple[int, int], fmt: str, **kw) -> bytes:
    rng = np.random.default_rng(size[0] * 31 + size[1])
    bands = len(Image.new(mode, (1, 1)).getbands())
    arr = rng.integers(0, 255, (size[1], size[0], bands), dtype=np.uint8)
    im = Image.fromarray(arr[..., 0] if bands == 1 else arr, "L" if bands == 1 else ("RGBA" if bands == 4 else "RGB"))
    if im.mode != mode:
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _exif() -> bytes:
    ex = Image.Exif()
    ex[0x0112] = 6  # orientation: the stored sides are what counts (img2dataset decodes without transposing)
    ex[0x010F] = "laionprep test camera"
    return ex.tobytes()


CASES = {
    "jpeg baseline": _encode("RGB", (640, 480), "JPEG", quality=90),
    "jpeg progressive": _encode("RGB", (333, 517), "JPEG", progressive=True),
    "jpeg optimized, restart markers": _encode("RGB", (96, 40), "JPEG", optimize=True, restart_marker_rows=1),
    "jpeg grayscale": _encode("L", (1, 1), "JPEG"),
    "jpeg CMYK": _encode("CMYK", (50, 3000), "JPEG"),
    "jpeg with EXIF and ICC": _encode("RGB", (200, 100), "JPEG", exif=_exif(),
                                      icc_profile=b"\x00" * 4096),
    "jpeg 4:4:4": _encode("RGB", (17, 9), "JPEG", subsampling=0),
    "png RGB": _encode("RGB", (640, 480), "PNG"),
    "png RGBA": _encode("RGBA", (3, 700), "PNG"),
    "png palette": _encode("P", (64, 64), "PNG"),
    "png 16-bit": _encode("I;16", (20, 10), "PNG"),
    "png interlaced": _encode("RGB", (31, 33), "PNG", interlace=True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_header_size_is_pillows(name):
    data = CASES[name]
    with Image.open(io.BytesIO(data)) as im:
        want = (im.width, im.height, "JPEG" if im.format == "MPO" else im.format)
    assert sf._header_size(data) == want
    assert sf.check_image(data, OPTS) == want[:2]


def test_a_jpeg_with_fill_bytes_before_its_markers():
    data = CASES["jpeg baseline"]
    padded = data[:2] + b"\xff\xff\xff" + data[2:]  # fill bytes are allowed before any marker
    assert sf._header_size(padded) == (640, 480, "JPEG")
    with Image.open(io.BytesIO(padded)) as im:
        assert im.size == (640, 480)


@pytest.mark.parametrize("cut", [3, 11, 20, 150])
def test_a_header_cut_short_goes_to_pillow_and_is_refused(cut):
    data = CASES["jpeg with EXIF and ICC"][:cut]  # the frame header is past the EXIF and ICC segments
    assert sf._header_size(data) is None
    with pytest.raises(sf.FetchError) as e:
        sf.check_image(data, OPTS)
    assert sf.reason_of(str(e.value)) in ("truncated image", "not an image")


def test_other_formats_and_non_images_get_pillows_answer():
    webp = _encode("RGB", (48, 30), "WEBP")
    gif = _encode("P", (7, 5), "GIF")
    for data, size in ((webp, (48, 30)), (gif, (7, 5))):
        assert sf._header_size(data) is None and sf.check_image(data, OPTS) == size
    for data, reason in ((b"<html><body>no</body></html>", "not an image"), (b"\x89PNG\r\n\x1a\n", "not an image"),
                         (b"\xff\xd8\xff\xd9", "not an image"), (b"\x00" * 64, "not an image")):
        assert sf._header_size(data) is None
        with pytest.raises(sf.FetchError) as e:
            sf.check_image(data, OPTS)
        assert sf.reason_of(str(e.value)) in (reason, "truncated image"), data


def test_the_pixel_limit_is_read_from_the_header_before_any_decoding():
    # a PNG header claiming 30000 x 30000 with nothing behind it: refused by size alone
    ihdr = b"IHDR" + (30000).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00"
    data = b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + ihdr + b"\x00" * 4
    assert sf._header_size(data) == (30000, 30000, "PNG")
    with pytest.raises(sf.FetchError, match="image over 50000000 pixels"):
        sf.check_image(data, OPTS)
