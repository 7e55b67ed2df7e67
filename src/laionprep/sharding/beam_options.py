"""Which of reshard's extra arguments may go to Beam: only options Beam itself defines.

Beam ignores what it does not know, so before this a typo (``--min-simlarity 0.4``) or a flag of another tool
(``--compression gzip``) ran the job without it and exited 0.  Every ``PipelineOptions`` subclass registers its
flags in ``_add_argparse_args``; :func:`known_parser` builds one parser from all of them, the way
``PipelineOptions.get_all_options`` does, after importing the chosen runner's module (a runner may define its
own options class).  :func:`check` refuses anything that parser does not take, naming the closest flag among
reshard's and Beam's.
"""
from __future__ import annotations

import argparse
import importlib
from typing import Sequence

from laionprep.errors import UsageError
from laionprep.options import did_you_mean

BEAM_EXAMPLES = "--runner, --project, --region, --temp_location, --direct_num_workers, --max_num_workers"


def _subclasses(cls) -> list[type]:
    out = []
    for c in cls.__subclasses__():
        out += [c, *_subclasses(c)]
    return out


def _import_runner_module(beam_args: Sequence[str]) -> None:
    from apache_beam.runners import runner as beam_runner

    name = ""
    for i, a in enumerate(beam_args):
        if a.startswith("--runner="):
            name = a.split("=", 1)[1]
        elif a == "--runner" and i + 1 < len(beam_args):
            name = beam_args[i + 1]
    path = beam_runner._RUNNER_MAP.get(name.lower(), beam_runner._RUNNER_MAP.get(name.lower() + "runner", name))
    if "." in path:
        try:
            importlib.import_module(path.rsplit(".", 1)[0])
        except Exception:  # noqa: BLE001  (not installed: Beam says so itself when it creates the runner)
            pass


def known_parser(beam_args: Sequence[str] = ()) -> argparse.ArgumentParser:
    """One parser with every option of every registered ``PipelineOptions`` class (and the runner's)."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    _import_runner_module(beam_args)
    parser = _BeamArgumentParser(allow_abbrev=False, add_help=False)
    seen: dict[str, type] = {}
    for cls in _subclasses(PipelineOptions):
        seen.setdefault(f"{cls.__module__}.{cls.__qualname__}", cls)
    for cls in seen.values():
        try:
            cls._add_argparse_args(parser)
        except argparse.ArgumentError:  # a class re-declaring a flag another already has: that flag is known
            pass
    return parser


def option_names(parser: argparse.ArgumentParser) -> list[str]:
    return [o for a in parser._actions for o in a.option_strings]


def check(beam_args: Sequence[str], reshard_flags: Sequence[str]) -> None:
    """Refuse any of ``beam_args`` (``ReshardConfig.beam_args``: the CLI's extra arguments) that Beam does not
    define: a usage error naming the closest of ``reshard_flags`` and Beam's options."""
    if not beam_args:
        return
    parser = known_parser(beam_args)
    try:
        _, unknown = parser.parse_known_args(list(beam_args))
    except SystemExit:  # Beam's parser rejected a value (e.g. a bad --runner choice): it printed why
        raise UsageError(f"Beam cannot parse these options: {' '.join(beam_args)}", where="laionprep reshard",
                         fix="see the message above; Beam options are e.g. " + BEAM_EXAMPLES) from None
    if not unknown:
        return
    bad = unknown[0]
    name = bad.split("=", 1)[0]
    if not name.startswith("-"):
        raise UsageError(f"unexpected argument {bad!r}", where="laionprep reshard",
                         fix="SRC folders come first; a flag's value follows its flag (or --flag=value)")
    hint = did_you_mean(name, [*reshard_flags, *option_names(parser)])
    raise UsageError(f"{name} is not a reshard flag nor an Apache Beam option"
                     + (f": did you mean {hint}?" if hint else ""),
                     where="laionprep reshard " + " ".join(beam_args),
                     fix="see `laionprep reshard --help` for reshard's flags; other options go to Beam only if Beam "
                         "defines them, e.g. " + BEAM_EXAMPLES)
