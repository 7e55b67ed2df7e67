"""report.json holds every figure; report.html is self-contained and a real headless browser shows its plots."""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from laionprep.validate import ValidateConfig, validate

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def report(demo_download, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("report") / "rep")
    rep = validate(ValidateConfig(demo_download, report=out, workers=2, decode_fraction=1.0))
    return rep, out


def test_report_json_has_the_figures(report, demo_download):
    rep, out = report
    data = json.load(open(os.path.join(out, "report.json")))
    assert data["ok"] is True and data["kind"] == "download" and data["totals"]["records"] == 190
    f = data["figures"]
    # download success and failure reasons, from the shard parquets
    parquets = sorted(glob.glob(os.path.join(demo_download, "tfrecord", "*.parquet")))
    t = pa.concat_tables([pq.read_table(p) for p in parquets]).to_pydict()
    assert f["download"]["rows"] == len(t["status"]) and f["download"]["success"] == t["status"].count("success")
    top = dict((m, n) for m, n in f["download"]["top_errors"])
    assert top == {"failed_to_download: HTTP Error 404: Not Found": t["status"].count("failed_to_download")}
    # NSFW counts and the similarity histogram, from the records
    nsfw = [s for s, st in zip(t["NSFW"], t["status"]) if st == "success"]
    assert f["categories"]["NSFW"] == {k: nsfw.count(k) for k in set(nsfw)}
    sim = f["floats"]["similarity"]
    want = np.array([s for s, st in zip(t["similarity"], t["status"]) if st == "success"], dtype=np.float32)
    assert sim["n"] == 190 and sum(sim["counts"]) == 190
    assert sim["min"] == pytest.approx(float(want.min())) and sim["mean"] == pytest.approx(float(want.mean()), 1e-5)
    # sizes and caption lengths
    assert f["ints"]["height"]["n"] == 190 and min(f["ints"]["width"]["min"], f["ints"]["height"]["min"]) == 480
    caps = [len(c) for c, st in zip(t["caption"], t["status"]) if st == "success"]
    assert f["ints"]["caption_chars"]["max"] == max(caps)
    stats = [json.load(open(os.path.join(demo_download, "tfrecord", f"{i:05d}_stats.json")))["successes"]
             for i in range(4)]
    assert [s["records"] for s in f["records_per_shard"]] == stats


def test_report_html_is_self_contained(report):
    _, out = report
    html = open(os.path.join(out, "report.html"), encoding="utf-8").read()
    imgs = re.findall(r"<img [^>]*src='([^']*)'", html)
    assert len(imgs) >= 7  # download, NSFW, similarity, width, height, caption length, records per shard
    assert all(s.startswith("data:image/png;base64,") for s in imgs)
    assert not re.search(r"(src|href)=['\"](https?:|file:|//)", html)


def _chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.fail("chromium is not installed, so the report page cannot be checked in a browser: install it with "
                    "`apt-get update && apt-get install -y chromium` (Debian; `make system-deps` does it as root)")
    return exe


def test_headless_chromium_shows_the_plots(report, tmp_path):
    """Opens report.html in Debian's chromium: the DOM reports every <img> decoded (naturalWidth > 0), and the
    screenshot holds the plots' colours."""
    _, out = report
    exe = _chromium()
    page = os.path.join(out, "report.html")
    # 1. DOM: a copy of the page with a tiny script that records, after load, each image's decoded width
    probe = str(tmp_path / "probe.html")
    with open(page, encoding="utf-8") as f:
        html = f.read()
    script = ("<script>window.addEventListener('load',function(){var r=[];"
              "document.querySelectorAll('img').forEach(function(i){r.push(i.complete?i.naturalWidth:-1)});"
              "document.body.setAttribute('data-widths',r.join(','));});</script>")
    with open(probe, "w", encoding="utf-8") as f:
        f.write(html.replace("</body>", script + "</body>"))
    dom = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'u1'}", "--dump-dom",
                          "file://" + probe], capture_output=True, text=True, timeout=120)
    m = re.search(r'data-widths="([^"]*)"', dom.stdout)
    assert m, f"chromium did not run the probe: {dom.stderr[-2000:]}"
    widths = [int(w) for w in m.group(1).split(",")]
    assert len(widths) >= 7 and all(w > 100 for w in widths), widths
    # 2. pixels: the screenshot of the real page shows the bars of the plots
    shot = str(tmp_path / "shot.png")
    subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'u2'}", f"--screenshot={shot}",
                    "--window-size=1200,2000", "file://" + page], capture_output=True, timeout=120, check=True)
    px = np.asarray(Image.open(shot).convert("RGB")).astype(int)

    def near(rgb):
        return int((np.abs(px - np.array(rgb)).sum(axis=2) < 30).sum())

    assert near((0x2A, 0x9D, 0x8F)) > 2000  # the download-success bar
    assert near((0x6A, 0x4C, 0x93)) > 2000  # the similarity histogram
    assert near((0x1D, 0x35, 0x57)) > 500  # the width / height / caption histograms
