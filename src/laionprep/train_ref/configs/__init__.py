"""Bundled FLIP configs: ``flip_tiny`` (CPU demo) and ``flip_b16`` / ``flip_l16`` / ``flip_h14`` (FLIP's published
model sizes and schedule).  Each file's ``get_config()`` returns an ``ml_collections.ConfigDict``; ``common.py``
holds the fields they share and documents each one."""
