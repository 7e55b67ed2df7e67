"""``tfds build`` builder for LAION-400M img2dataset TFRecords (see README.md)."""
