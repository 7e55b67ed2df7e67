"""TensorFlow Datasets for laionprep: zero-copy registration (``build-tfds``), image-folder evaluation sets and the
``tfds build`` builders.

Importing this package registers the builders ``laion400m_tfrecord``, ``laion2b_en_tfrecord`` and
``datacomp_tfrecord`` with TFDS, so ``tfds.load(name, data_dir=...)`` and ``tfds build --imports
laionprep.tfds_builders NAME`` find them.  The stages live in submodules: ``register.register`` /
``register.check_registration`` / ``register.describe`` and ``image_folder.build_image_folder`` /
``image_folder.class_names``.
"""
from __future__ import annotations

from laionprep._env import setup_environment as _setup

_setup()

from laionprep.tfds_builders.datacomp_tfrecord import datacomp_tfrecord_dataset_builder  # noqa: E402,F401
from laionprep.tfds_builders.laion2b_en_tfrecord import laion2b_en_tfrecord_dataset_builder  # noqa: E402,F401
from laionprep.tfds_builders.laion400m_tfrecord import laion400m_tfrecord_dataset_builder  # noqa: E402,F401

BUILDERS = ("laion400m_tfrecord", "laion2b_en_tfrecord", "datacomp_tfrecord")

