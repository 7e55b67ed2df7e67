"""End to end: demo data (img2dataset-style TFRecords) -> registered as a TFDS dataset (zero-copy: links to the
same files) -> flip_tiny trained from it -> zero-shot on the demo's labelled evaluation folder >= 3x chance."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from laionprep.train_ref import evaluate, runner


@pytest.mark.slow
def test_demo_data_register_train_zero_shot(tmp_path, eval_folder, demo_pairs):
    root, name = demo_pairs

    workdir = str(tmp_path / "run")
    res = runner.train_demo(name, eval_folder, workdir, data_dir=root)  # flip_tiny, unchanged

    chance = 1 / 30
    assert res["num_classes"] == 30 and res["num_examples"] == 240
    assert res["chance_top1"] == pytest.approx(chance)
    assert res["top1"] >= 3 * chance, res  # the bar: >= 3x chance (10%)
    assert res["top5"] >= res["top1"]
    # the loss fell over the run
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        losses = [json.loads(line)["train/loss"] for line in f if "train/loss" in line]
    assert len(losses) == 200 // 25
    assert np.mean(losses[-3:]) < losses[0] - 0.5, losses
    with open(os.path.join(workdir, "eval_results.json")) as f:
        assert json.load(f)["top1"] == res["top1"]
    # TensorBoard scalars: loss, lr, temperature, images/s and the zero-shot result
    from tensorflow.python.summary.summary_iterator import summary_iterator

    tags = set()
    for fn in os.listdir(os.path.join(workdir, "tensorboard")):
        for event in summary_iterator(os.path.join(workdir, "tensorboard", fn)):
            tags.update(v.tag for v in event.summary.value if v.metadata.plugin_data.plugin_name == "scalars")
    assert {"train/loss", "train/lr", "train/temperature", "train/images_per_sec", "eval/top1"} <= tags
    print(f"\nflip_tiny zero-shot top-1 {100 * res['top1']:.1f}% top-5 {100 * res['top5']:.1f}% "
          f"(chance {100 * chance:.1f}%), final loss {losses[-1]:.3f}")
    # `laionprep eval` on the finished run reproduces the numbers
    from laionprep.train_ref import config_lib

    cfg = config_lib.load_config("flip_tiny", [f"--config.eval.source={eval_folder}"])
    ev = evaluate.evaluate(cfg, workdir)
    assert ev["top1"] == pytest.approx(res["top1"]) and ev["step"] == 200
