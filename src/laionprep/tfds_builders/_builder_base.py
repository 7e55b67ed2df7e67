"""The shared part of the ``tfds build`` builders: an img2dataset TFRecord folder (``manual_dir``) -> TFDS, with Beam.

Each family's builder (``laion400m_tfrecord``, ``laion2b_en_tfrecord``, ``datacomp_tfrecord``) is a subclass that
names its dataset spec.  Unlike ``build-tfds --mode register`` the builders *rewrite* the records, through TFDS's own
writer: every record is re-serialised with the family's fixed features (:func:`features.builder_roles`), nulls that
img2dataset wrote as ``b''`` become the spec's sentinels, and TFDS shards, shuffles and counts the output.

Beam: ``_generate_examples`` returns a ``PTransform`` (shard list -> reshuffle -> records), so
``tfds build --beam_pipeline_options=runner=DataflowRunner,project=...,temp_location=gs://...`` runs the same code
on Dataflow.  Without a runner (or with ``runner=DirectRunner``), the builder runs Beam's in-process Python runner
(``FnApiRunner``, what the Python DirectRunner executes batch pipelines with) instead of letting the DirectRunner
try the Prism runner first, which downloads a Go binary: no network is needed for local builds.
``direct_num_workers`` / ``direct_running_mode`` in the options are honoured.

A folder registered zero-copy under the same name (``build-tfds --name laion400m_tfrecord``) loads through these
classes too: when the version folder already holds ``features.json``, the builder takes its features from there.
"""
from __future__ import annotations

import dataclasses
import inspect
import logging

import tensorflow_datasets as tfds
from etils import epath

from laionprep.datasets import get_spec
from laionprep.errors import DataError
from laionprep.tfds_builders import features as feats
from laionprep.tfds_builders import sources
from laionprep.tfrecord import read_records

log = logging.getLogger(__name__)

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download the images first with laionprep, then pass its output folder as the manual dir:

    laionprep download --dataset {spec} --output DIR
    tfds build {path} --manual_dir DIR --data_dir ROOT

DIR (or DIR/tfrecord) holds img2dataset's NNNNN.tfrecord shards and their NNNNN_stats.json markers; only complete
shards (with a stats file) are read.  Add --beam_pipeline_options=runner=DataflowRunner,... to build on Dataflow.
"""


def local_runner_if_unset(download_config: tfds.download.DownloadConfig | None) -> tfds.download.DownloadConfig:
    """Use Beam's in-process Python runner when no runner (or the DirectRunner) is asked for."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import StandardOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    cfg = download_config or tfds.download.DownloadConfig()
    if cfg.beam_runner is not None:
        return cfg
    runner = None
    if cfg.beam_options is not None:
        runner = cfg.beam_options.view_as(StandardOptions).runner
    if runner in (None, "DirectRunner", "direct", "SwitchingDirectRunner"):
        options = cfg.beam_options or beam.options.pipeline_options.PipelineOptions()
        return dataclasses.replace(cfg, beam_runner=FnApiRunner(), beam_options=options)
    return cfg


def _examples_of_shard(item, roles):
    number, url = item
    for i, data in enumerate(read_records(url)):
        ex = feats.normalise(feats.parse(data), roles, where=f"{url} record {i}")
        yield f"{number:05d}_{i:06d}", ex


class TFRecordFolderBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Abstract: subclasses set ``SPEC`` (a ``laionprep.datasets`` spec name)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: img2dataset TFRecords rewritten with one type per key."}
    SPEC = "laion400m"

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS 4.9.10 finds the builder's folder (README.md, CITATIONS.bib, dummy_data/) through
        # `importlib_resources`, which it only declares for Python < 3.9: the file of the class is the same answer.
        return epath.Path(inspect.getfile(cls))

    @classmethod
    def spec(cls):
        return get_spec(cls.SPEC)

    def _registered_features(self):
        data_dir = getattr(self, "_data_dir", None)
        if data_dir and (epath.Path(data_dir) / "features.json").exists():
            return tfds.features.FeatureConnector.from_config(data_dir)
        return None

    def _info(self) -> tfds.core.DatasetInfo:
        spec = self.spec()
        features = self._registered_features() or feats.features_dict(feats.builder_roles(spec), spec)
        return self.dataset_info_from_configs(features=features, homepage=spec.homepage or None,
                                              citation=spec.citation or None)

    def _generate_splits(self, dl_manager, download_config):
        return super()._generate_splits(dl_manager, local_runner_if_unset(download_config))

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        return {"train": self._generate_examples(dl_manager.manual_dir)}

    def _generate_examples(self, manual_dir):
        import apache_beam as beam

        src = sources.scan_download(str(manual_dir))
        for p in src.problems:
            log.warning("%s: left out: %s", self.name, p.message)
        shards = [s for s in src.splits.get("train", []) if s.count > 0]
        if not shards:
            raise DataError("no complete img2dataset shard in the manual dir", where=str(manual_dir),
                            fix="pass --manual_dir DIR, the output folder of `laionprep download`")
        roles = feats.builder_roles(self.spec())
        return (
            beam.Create([(s.number, s.url) for s in shards])
            | "Reshuffle" >> beam.Reshuffle()
            | "ReadShard" >> beam.FlatMap(_examples_of_shard, roles=roles)
        )
