"""Generated test data: the synthetic mini-LAION (metadata, images, captions) and the loopback server that serves it.

Used by the demo, the TFDS dummy-data generator, the tests and the benchmarks; it imports nothing above it.
"""
