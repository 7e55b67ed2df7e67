"""``laionprep build-tfds`` as a stage: its config from the parsed arguments, the stage runner around
``register`` / ``build_image_folder``, and the build-tfds manifest (``cli.py`` only parses, prints and maps errors).
"""
from __future__ import annotations

from laionprep import fs as lfs
from laionprep import manifest as lmanifest
from laionprep import stage
from laionprep.errors import UsageError

# RegisterConfig fields that change how the registration runs or where it goes, not what it registers
_RUN_ONLY = ("source", "data_dir", "verify", "check_read")


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


def write_manifest(cfg, record: dict, examples: dict[str, int]) -> dict:
    """``ROOT/NAME/VERSION/manifest.json`` (the one schema, ``manifest.py``); the registration record (also in
    metadata.json["laionprep"]) is its ``stages["build-tfds"]``."""
    params = {k: v for k, v in lmanifest.parameters_of(cfg)[0].items() if k not in _RUN_ONLY}
    total = sum(examples.values())
    acc = lmanifest.check_accounting(total, total, {}, stage="build-tfds", **{f"examples_{s}": n
                                                                              for s, n in examples.items()})
    return stage.write_manifest(cfg.dataset_dir, stage="build-tfds", dataset=record.get("dataset"),
                                status="complete", parameters=params,
                                inputs={"source": record.get("source"), "source_kind": record.get("source_kind")},
                                accounting=acc, stages={"build-tfds": record})


def run_stage(args) -> stage.StageResult:
    from laionprep.progress import progress_bar
    from laionprep.tfds_builders import register as reg

    dataset_dir = lfs.join(args.data_dir, args.name, args.version)
    if args.check:
        res = reg.check_registration(dataset_dir)
        table = stage.Table(f"laionprep build-tfds --check {args.name}", res.summary_rows())
        return stage.StageResult(manifest=lmanifest.read(dataset_dir), tables=(table,),
                                 exit_code=0 if res.status == "ok" else 1, detail=res)
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
    tables = (stage.Table(f"laionprep build-tfds {args.name} ({args.mode})", res.summary_rows()),
              stage.Table("as TFDS sees it", reg.describe(res.dataset_dir)))
    note = (f"load it:  tfds.load({args.name!r}, data_dir={args.data_dir!r}, split=...)\n"
            f"     or:  tfds.builder_from_directory({res.dataset_dir!r})")
    return stage.StageResult(manifest=lmanifest.read(res.dataset_dir), tables=tables, note=note, detail=res)


def run_command(args) -> int:
    return stage.print_result(run_stage(args))


__all__ = ["run_command", "run_stage", "write_manifest"]
