"""What ``laionprep build-tfds`` does with its parsed arguments (``cli.py`` only parses and maps errors)."""
from __future__ import annotations

from laionprep import fs as lfs
from laionprep.errors import UsageError


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


def run_command(args) -> int:
    from laionprep.progress import print_table, progress_bar
    from laionprep.tfds_builders import register as reg

    dataset_dir = lfs.join(args.data_dir, args.name, args.version)
    if args.check:
        res = reg.check_registration(dataset_dir)
        print_table(f"laionprep build-tfds --check {args.name}", res.summary_rows(), ["", ""])
        return 0 if res.status == "ok" else 1
    if not args.source:
        raise UsageError("--source is required (or pass --check)", where="--source",
                         fix="pass the download, resharded or image folder to register")
    with progress_bar(not args.no_progress) as prog:
        if args.mode == "image-folder":
            from laionprep.tfds_builders.image_folder import build_image_folder

            res = build_image_folder(args.source, args.name, args.data_dir, args.version,
                                     class_names_file=args.class_names, split=args.split, progress=prog)
        else:
            if args.class_names:
                raise UsageError("--class-names applies to --mode image-folder only", where="--class-names")
            res = reg.register(args.source, args.name, args.data_dir, args.version, mode=args.mode,
                               split=args.split or "train", dataset=args.dataset, exclude=_csv(args.exclude),
                               allow_incomplete=args.allow_incomplete, verify=args.verify, progress=prog)
    print_table(f"laionprep build-tfds {args.name} ({args.mode})", res.summary_rows(), ["", ""])
    print_table("as TFDS sees it", reg.describe(res.dataset_dir), ["", ""])
    print(f"load it:  tfds.load({args.name!r}, data_dir={args.data_dir!r}, split=...)\n"
          f"     or:  tfds.builder_from_directory({res.dataset_dir!r})")
    return 0
