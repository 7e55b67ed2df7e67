"""Folder kinds and what every stage asks of them: :func:`detect`, the one shard scanner, the one shard namer.

Stages never re-derive a layout: validate, reshard planning, build-tfds and the trainer's source resolution ask
this package (``kinds`` for the folder types, ``scan`` for complete shards, ``names`` for TFDS file names).
"""
from laionprep.folders.kinds import DownloadFolder, Folder, ReshardFolder, TfdsFolder, detect, download_folder
from laionprep.folders.names import format_template, reshard_template, shard_name, shard_names, template_folder
from laionprep.folders.shardscan import (Shard, ShardScan, group_files, list_done, list_sizes, local_path, read_many,
                                    resolve_download_folder, scan)

__all__ = ["DownloadFolder", "Folder", "ReshardFolder", "TfdsFolder", "detect", "download_folder",
           "resolve_download_folder", "format_template", "reshard_template", "shard_name", "shard_names",
           "template_folder", "Shard", "ShardScan", "group_files", "list_done", "list_sizes", "local_path",
           "read_many", "scan"]
