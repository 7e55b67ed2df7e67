"""``tfds build`` builder for LAION-2B-en / Re-LAION-2B-en img2dataset TFRecords (see README.md)."""
