"""laion2b_en_tfrecord: LAION-2B-en or Re-LAION-2B-en images downloaded by ``laionprep download``, via Beam.

Both datasets carry the same columns (similarity, punsafe, pwatermark), so one builder serves both; the manual
dir's ``manifest.json`` says which metadata it was downloaded from.
"""
from laionprep.tfds_builders._builder_base import MANUAL_DOWNLOAD_INSTRUCTIONS, TFRecordFolderBuilder


class Builder(TFRecordFolderBuilder):
    """LAION-2B-en / Re-LAION-2B-en: jpg, txt, key, url, sizes, similarity, punsafe, pwatermark."""

    SPEC = "laion2b-en"
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS.format(
        spec="laion2b-en (or relaion2b-en-research-safe)", path="src/laionprep/tfds_builders/laion2b_en_tfrecord")
