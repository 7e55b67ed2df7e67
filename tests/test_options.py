"""Options declared once: a verb's flags are its config's fields, and parsing them gives back the same config."""
from __future__ import annotations

import dataclasses

from laionprep import cli, options
from laionprep.validate import ValidateConfig


def test_validate_flags_are_the_config_fields():
    args = cli.build_parser().parse_args(
        ["validate", "D", "--quarantine", "--decode-fraction", "0", "--sha256", "stored", "--image-size", "64",
         "--report", "R", "--workers", "3", "--dataset", "laion400m"])
    assert options.from_args(ValidateConfig, args) == ValidateConfig(
        path="D", quarantine=True, decode_fraction=0.0, sha256="stored", image_size=64, report="R", workers=3,
        dataset="laion400m")
    assert options.from_args(ValidateConfig, cli.build_parser().parse_args(["validate", "D"])) == ValidateConfig("D")
    flagged = {f.name for f in dataclasses.fields(ValidateConfig) if "flag" in f.metadata}
    assert flagged == {f.name for f in dataclasses.fields(ValidateConfig)} - {"max_examples"}
    assert flagged <= set(vars(args))
