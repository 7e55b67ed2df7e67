"""laion400m_tfrecord: LAION-400M images downloaded by ``laionprep download`` (img2dataset TFRecords), via Beam."""
from laionprep.tfds_builders._builder_base import MANUAL_DOWNLOAD_INSTRUCTIONS, TFRecordFolderBuilder


class Builder(TFRecordFolderBuilder):
    """LAION-400M: jpg, txt, key, url, sizes, NSFW, similarity, LICENSE."""

    SPEC = "laion400m"
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS.format(
        spec="laion400m", path="src/laionprep/tfds_builders/laion400m_tfrecord")
