"""``reshard --image-size N``: a low-resolution copy of each image, re-encoded the way img2dataset's encoder does it.

img2dataset (``resizer.py``, the settings ``laionprep download`` uses: ``resize_mode=keep_ratio``,
``resize_only_if_bigger``, ``encode_quality=95``) decodes with OpenCV, scales the short side to the image size with
``cv2.INTER_AREA`` (new sides ``max(1, round(side * N / short side))``, albumentations' ``SmallestMaxSize``) and
encodes a JPEG at quality 95.  Here the same, with resize-only-if-bigger semantics: an image whose short side is
already <= N is carried byte-identical (never upscaled, never re-encoded).
"""
from __future__ import annotations

import dataclasses
import os

ENCODE_QUALITY = 95  # img2dataset's default encode_quality, the one `laionprep download` uses
INTERPOLATION = "area"  # img2dataset's downscale_interpolation


class ImageError(ValueError):
    """A stored image that cannot be decoded (the caller names the record)."""


def new_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) after scaling the short side to ``short_side`` (albumentations' rounding)."""
    scale = short_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


@dataclasses.dataclass(frozen=True)
class ShortSideResizer:
    """Re-encodes JPEGs whose short side is larger than ``short_side``."""

    short_side: int

    def __call__(self, data: bytes) -> tuple[bytes, int, int] | None:
        """``(jpeg, width, height)`` of the smaller copy, or None when the image is kept as it is.  The size comes
        from the image itself (its header), not from the record's width/height features."""
        import io

        import cv2
        import numpy as np
        from PIL import Image

        try:
            w, h = Image.open(io.BytesIO(data)).size  # the header only
        except Exception as e:
            raise ImageError(f"the image cannot be read ({type(e).__name__}: {e})") from None
        if min(w, h) <= self.short_side:
            return None
        cv2.setNumThreads(1)  # one worker process per core already
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ImageError("the image cannot be decoded")
        h, w = img.shape[:2]
        nw, nh = new_size(w, h, self.short_side)
        small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", small, [int(cv2.IMWRITE_JPEG_QUALITY), ENCODE_QUALITY])
        if not ok:  # pragma: no cover - OpenCV encodes any decoded image
            raise ImageError("the resized image cannot be encoded")
        return buf.tobytes(), nw, nh

    def settings(self, source: dict) -> dict:
        """The copy's image settings in the download manifest's terms (what `laionprep validate` checks), from the
        sources' (``source``, {} when unknown or mixed).  A copy is never larger than its stored image; when the
        download upscaled small originals to its image size (``resize_only_if_bigger`` false) every stored short
        side exceeds N, so every copy has short side N; when it did not, an original <= N is carried as it is."""
        only_bigger = source.get("resize_only_if_bigger", True) if source.get("resize_mode") in (
            "keep_ratio", "center_crop") else True
        return {"image_size": self.short_side, "resize_mode": "keep_ratio", "resize_only_if_bigger": bool(only_bigger),
                "encode_quality": ENCODE_QUALITY, "interpolation": INTERPOLATION}


def write_low_res_copy(files, out_dir: str, short_side: int, image_key: str = "jpg") -> list[str]:
    """The records of the TFRecord ``files`` with every image re-encoded by :class:`ShortSideResizer` (``width`` /
    ``height`` updated where the records have them), under ``out_dir/tfrecord/`` with the same file names: the
    low-resolution copy of ``reshard --image-size`` without the reshard, for the benchmarks and the tests.  Returns
    the paths written."""
    from laionprep import tfrecord

    resize = ShortSideResizer(short_side)
    os.makedirs(os.path.join(out_dir, "tfrecord"), exist_ok=True)
    paths = []
    for path in files:
        paths.append(os.path.join(out_dir, "tfrecord", os.path.basename(path)))
        with tfrecord.RecordWriter(paths[-1]) as w:
            for raw in tfrecord.read_records(path):
                ex = tfrecord.Example.FromString(raw)
                f = ex.features.feature
                small = resize(f[image_key].bytes_list.value[0])
                if small is not None:
                    f[image_key].bytes_list.value[0] = small[0]
                    if "width" in f and "height" in f:
                        f["width"].int64_list.value[:] = [small[1]]
                        f["height"].int64_list.value[:] = [small[2]]
                w.write(ex.SerializeToString())
    return paths
