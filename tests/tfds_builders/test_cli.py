"""`laionprep build-tfds` on the command line: exit codes, messages, --check."""
from __future__ import annotations

import json
import os

from laionprep.cli import main


def test_cli_register_check_and_errors(copy_download, tmp_path, capsys):
    dl = copy_download()
    root = str(tmp_path / "tfds")
    assert main(["build-tfds", "--name", "demo_cli", "--source", dl, "--data-dir", root, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "as TFDS sees it" in out and "split train" in out and "tfds.load('demo_cli'" in out
    assert main(["build-tfds", "--check", "--name", "demo_cli", "--data-dir", root]) == 0
    assert "ok" in capsys.readouterr().out

    # the source changes: --check exits 1 and says what changed
    p = os.path.join(dl, "tfrecord", "00000_stats.json")
    st = json.load(open(p))
    st["successes"] -= 1
    json.dump(st, open(p, "w"))
    assert main(["build-tfds", "--check", "--name", "demo_cli", "--data-dir", root]) == 1
    assert "changed since registration" in capsys.readouterr().out
    # ... and registering it again is refused (the file holds one more record than the stats say): exit 1
    assert main(["build-tfds", "--name", "demo_cli", "--source", dl, "--data-dir", root, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "wrong record count" in err and "fix:" in err and "Traceback" not in err
    # usage errors: exit 2
    assert main(["build-tfds", "--name", "laion400m", "--source", dl, "--data-dir", root]) == 2
    assert "TFDS catalog" in capsys.readouterr().err
    assert main(["build-tfds", "--name", "demo_cli", "--data-dir", root]) == 2


def test_cli_image_folder(tmp_path, capsys):
    from laionprep.testing import synth

    synth.write_eval_folder(str(tmp_path / "eval"), per_class=1)
    root = str(tmp_path / "tfds")
    assert main(["build-tfds", "--mode", "image-folder", "--name", "demo_eval", "--source", str(tmp_path / "eval"),
                 "--data-dir", root, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "ClassLabel(30 classes)" in out and "30 images" in out
