"""The ``laionprep`` command line.  This module only parses arguments, calls a stage and maps errors to exit codes:
each verb is one ``_cmd_<verb>`` function that calls into the package (``ingest``, ``validate``, ``sharding``,
``tfds_builders``, ``train_ref``, ``demo``).  Exit codes: 0 ok, 1 data problems, 2 usage errors.
"""
from __future__ import annotations

import argparse
import sys
import traceback

from laionprep.errors import LaionprepError, UsageError


# ----------------------------------------------------------------------------------------------------- datasets
def _add_datasets(sub):
    p = sub.add_parser("datasets", help="list the known dataset specs")
    p.add_argument("--verbose", "-v", action="store_true", help="also show columns and metadata locations")
    p.set_defaults(func=_cmd_datasets)


def _cmd_datasets(args) -> int:
    from laionprep.datasets import SPECS
    from laionprep.progress import print_table

    rows = []
    for s in SPECS.values():
        row = [s.name, s.approx_rows, s.default_filters.describe(), ", ".join(c.name for c in s.extra_columns)]
        if args.verbose:
            row.append(s.metadata_url or "(generated)")
        rows.append(row)
    headers = ["dataset", "rows", "default filters", "carried columns"] + (["metadata"] if args.verbose else [])
    print_table("datasets", rows, headers)
    return 0


# ----------------------------------------------------------------------------------------------------- download
def _add_filter_flags(p):
    g = p.add_argument_group("filters (override the dataset's defaults)")
    g.add_argument("--nsfw", help="NSFW tags to keep, comma-separated, e.g. UNLIKELY,UNSURE ('all' keeps every tag)")
    g.add_argument("--min-similarity", type=float, help="keep rows with similarity >= this")
    g.add_argument("--max-punsafe", type=float, help="keep rows with punsafe < this")
    g.add_argument("--max-pwatermark", type=float, help="keep rows with pwatermark < this")
    g.add_argument("--no-filters", action="store_true", help="drop the dataset's default filters (flags still apply)")


def _add_download_flags(p):
    g = p.add_argument_group("download (img2dataset)")
    g.add_argument("--image-size", type=int, default=480, help="short side after resizing (default 480)")
    g.add_argument("--resize-mode", default="keep_ratio", help="img2dataset resize mode (default keep_ratio)")
    g.add_argument("--resize-only-if-bigger", action="store_true", help="never upscale small images")
    g.add_argument("--processes", type=int, default=0, help="download processes (default: one per core)")
    g.add_argument("--threads", type=int, default=64, help="download threads per process (default 64)")
    g.add_argument("--retries", type=int, default=0, help="retries per URL (default 0)")
    g.add_argument("--timeout", type=int, default=10, help="seconds per URL (default 10)")
    g.add_argument("--number-sample-per-shard", type=int, default=10000, help="rows per shard (default 10000)")
    g.add_argument("--distributor", default="multiprocessing", choices=["multiprocessing", "pyspark", "ray"])
    g.add_argument("--spark-master", help="Spark master URL for --distributor pyspark (default local[processes])")


def _add_download(sub):
    p = sub.add_parser("download", help="metadata -> prefilter -> img2dataset -> TFRecords (resumable)")
    p.add_argument("--dataset", required=True, help="dataset spec name (see `laionprep datasets`)")
    p.add_argument("--output", required=True, help="output folder DIR (local or gs://)")
    p.add_argument("--metadata-source", help="folder, file or fsspec URL of the metadata parquet (default: the Hub)")
    p.add_argument("--parts", help="subset of metadata files: a count (3) or indices/ranges (0,2,5-7)")
    p.add_argument("--max-samples", type=int, help="stop reading metadata after this many rows (a quick try)")
    p.add_argument("--extra-columns", help="comma-separated columns to carry instead of the spec's")
    _add_filter_flags(p)
    _add_download_flags(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_download)


def _nsfw(value):
    if value is None:
        return None
    if value.strip().lower() == "all":
        return ()
    return tuple(v.strip().upper() for v in value.split(",") if v.strip())


def ingest_config(args):
    from laionprep.ingest.download import DownloadOptions
    from laionprep.ingest.pipeline import IngestConfig

    nsfw = _nsfw(args.nsfw)
    return IngestConfig(
        dataset=args.dataset, output=args.output, metadata_source=args.metadata_source, parts=args.parts,
        max_samples=args.max_samples, nsfw=None if nsfw == () else nsfw, min_similarity=args.min_similarity,
        max_punsafe=args.max_punsafe, max_pwatermark=args.max_pwatermark,
        no_filters=args.no_filters or nsfw == (),
        extra_columns=tuple(c.strip() for c in args.extra_columns.split(",")) if args.extra_columns else None,
        download=DownloadOptions(
            image_size=args.image_size, resize_mode=args.resize_mode, resize_only_if_bigger=args.resize_only_if_bigger,
            processes=args.processes, threads=args.threads, retries=args.retries, timeout=args.timeout,
            number_sample_per_shard=args.number_sample_per_shard, distributor=args.distributor,
            spark_master=args.spark_master,
        ),
    )


def _cmd_download(args) -> int:
    from laionprep.ingest import pipeline
    from laionprep.progress import print_table, progress_bar

    cfg = ingest_config(args)
    with progress_bar(not args.no_progress) as prog:
        m = pipeline.run(cfg, progress=prog)
    print_table(f"laionprep download {cfg.dataset} -> {cfg.output}", pipeline.summary_rows(m), ["", "rows"])
    return 0


# ----------------------------------------------------------------------------------------------------- demo
def _add_demo(sub):
    p = sub.add_parser("demo", help="the whole pipeline, offline, on a generated mini-LAION served from 127.0.0.1")
    p.add_argument("--workdir", required=True, help="folder for everything the demo writes")
    p.add_argument("--rows", type=int, default=3000, help="metadata rows to generate (default 3000)")
    p.add_argument("--processes", type=int, default=0, help="download processes (default: one per core)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args) -> int:
    from laionprep.demo import run as demo_run

    return demo_run.main(demo_run.DemoConfig(workdir=args.workdir, rows=args.rows, processes=args.processes,
                                             seed=args.seed, progress=not args.no_progress))


# ----------------------------------------------------------------------------------------------------- main
_VERBS = [_add_datasets, _add_download, _add_demo]


def build_parser() -> argparse.ArgumentParser:
    from laionprep import __version__

    parser = argparse.ArgumentParser(prog="laionprep", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"laionprep {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for add in _VERBS:
        add(sub)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_extra", False):
        parser.error("unrecognized arguments: " + " ".join(extra))
    args.extra = extra
    try:
        return int(args.func(args) or 0)
    except LaionprepError as e:
        if args.debug:
            traceback.print_exc()
        kind = "usage error" if isinstance(e, UsageError) else "error"
        print(f"laionprep {args.verb}: {kind}: {e.render()}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"laionprep {args.verb}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
