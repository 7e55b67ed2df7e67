"""``tfds build`` builder for DataComp img2dataset TFRecords (see README.md)."""
