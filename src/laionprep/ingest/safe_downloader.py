"""The img2dataset ``Downloader`` that fetches with :mod:`laionprep.ingest.safe_fetch`.

img2dataset pickles its ``Downloader`` into every worker process (spawned by multiprocessing, or run by Spark or
Ray executors), where its ``download_shard`` calls ``img2dataset.downloader.download_image_with_retry``.  This
subclass carries the :class:`~laionprep.ingest.safe_fetch.FetchOptions` along and installs laionprep's fetcher in
the worker before each shard; TFRecord shards are written by :mod:`laionprep.ingest.sample_writer` (the same bytes
without importing TensorFlow); the rest of img2dataset (reading, resizing, stats) is unchanged.  Only the
download child imports this module (it imports img2dataset, cv2 and their dependencies).
"""
from __future__ import annotations

import functools
import json

from img2dataset.downloader import Downloader

from laionprep.ingest import safe_fetch, sample_writer


class JsonBoxes:
    """img2dataset's resizer, given the face boxes as the JSON text the prefilter stores list columns as (its
    blurrer indexes ``[[x0, y0, x1, y1], ...]``; a null became the empty string: no box)."""

    def __init__(self, resizer):
        self.resizer = resizer

    def __call__(self, img_stream, blurring_bbox_list=None):
        if isinstance(blurring_bbox_list, bytes):
            blurring_bbox_list = blurring_bbox_list.decode()
        if isinstance(blurring_bbox_list, str):
            blurring_bbox_list = json.loads(blurring_bbox_list) if blurring_bbox_list.strip() else []
        return self.resizer(img_stream, blurring_bbox_list)


class SafeDownloader(Downloader):
    def __init__(self, *args, fetch_options: safe_fetch.FetchOptions, **kwargs):
        super().__init__(*args, **kwargs)
        self.fetch_options = fetch_options
        if self.blurring_bbox_col is not None:
            self.resizer = JsonBoxes(self.resizer)

    def __call__(self, row):
        safe_fetch.install(self.fetch_options)
        return super().__call__(row)


def use_in_img2dataset(opts: safe_fetch.FetchOptions) -> None:
    """In the download child, before ``img2dataset.download``: make it build a SafeDownloader with ``opts``."""
    import importlib

    # the module: the package's attribute ``main`` is img2dataset's CLI function of the same name
    i2d_main = importlib.import_module("img2dataset.main")
    i2d_main.Downloader = functools.partial(SafeDownloader, fetch_options=opts)
    # TFRecord shards written without TensorFlow in the workers (its import: ~3.5 s of CPU per worker process)
    i2d_main.TFRecordSampleWriter = sample_writer.TFRecordSampleWriter
    safe_fetch.install(opts)  # also in this process (the pyspark distributor may run tasks here)
