"""datacomp_tfrecord: DataComp CommonPool / DataComp-1B images downloaded by ``laionprep download``, via Beam."""
from laionprep.tfds_builders._builder_base import MANUAL_DOWNLOAD_INSTRUCTIONS, TFRecordFolderBuilder


class Builder(TFRecordFolderBuilder):
    """DataComp: jpg, txt, key, url, sizes, uid, CLIP B/32 and L/14 similarity scores, sha256."""

    SPEC = "datacomp_small"
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS.format(
        spec="datacomp_small (or _medium, _large, _xlarge, _1b)", path="src/laionprep/tfds_builders/datacomp_tfrecord")
