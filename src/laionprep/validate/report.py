"""``--report DIR``: ``report.json`` (every figure, machine-readable) and ``report.html`` (one self-contained page:
the plots are matplotlib PNGs embedded as base64, no external files, scripts or fonts)."""
from __future__ import annotations

import base64
import html
import io
import json

import numpy as np

from laionprep import fs as lfs

MAX_HTML_ROWS = 500


def write_report(rep, folder: str) -> dict[str, str]:
    lfs.makedirs(folder)
    jpath, hpath = lfs.join(folder, "report.json"), lfs.join(folder, "report.html")
    lfs.write_json(jpath, rep.to_dict())
    lfs.atomic_write_bytes(hpath, render_html(rep).encode("utf-8"))
    return {"json": jpath, "html": hpath}


# ------------------------------------------------------------------------------------------------- plots
def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plots(rep) -> list[tuple[str, str]]:
    """(title, base64 PNG) for each figure the data allows."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    f = rep.figures
    out = []
    dl = f.get("download")
    if dl and dl["rows"]:
        fig, ax = plt.subplots(figsize=(6, 3))
        items = sorted(dl["status"].items(), key=lambda kv: -kv[1])
        ax.barh([k for k, _ in items][::-1], [v for _, v in items][::-1],
                color=["#2a9d8f" if k == "success" else "#e76f51" for k, _ in items][::-1])
        ax.set_xlabel("rows")
        ax.set_title(f"download status: {dl['success_rate']:.1%} success of {dl['rows']:,} rows")
        out.append(("Download success", _png(fig)))
    for k, c in f.get("categories", {}).items():
        fig, ax = plt.subplots(figsize=(6, 2.6))
        items = list(c.items())[:15]
        ax.barh([str(a) for a, _ in items][::-1], [b for _, b in items][::-1], color="#457b9d")
        ax.set_xlabel("records")
        ax.set_title(f"{k} counts")
        out.append((f"{k} counts", _png(fig)))
    for k, s in f.get("floats", {}).items():
        if not s["n"]:
            continue
        edges = np.asarray(s["edges"])
        counts = np.asarray(s["counts"])
        nz = np.nonzero(counts)[0]
        lo, hi = (nz[0], nz[-1] + 1) if len(nz) else (0, len(counts))
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.bar(edges[lo:hi], counts[lo:hi], width=np.diff(edges)[lo:hi], align="edge", color="#6a4c93")
        extra = []
        if s["sentinel_-1"]:
            extra.append(f"{s['sentinel_-1']:,} null (-1)")
        if s["below_-1"] or s["above_1"]:
            extra.append(f"{s['below_-1'] + s['above_1']:,} outside [-1, 1]")
        ax.set_title(f"{k}: n={s['n']:,} mean={s['mean']:.3f}" + (" (" + ", ".join(extra) + ")" if extra else ""))
        ax.set_xlabel(k)
        ax.set_ylabel("records")
        out.append((f"{k} histogram", _png(fig)))
    for k, label in (("width", "image width (px)"), ("height", "image height (px)"),
                     ("caption_chars", "caption length (characters)")):
        s = f.get("ints", {}).get(k)
        if not s or not s.get("n"):
            continue
        vals = np.array(sorted(s["counts"]), dtype=np.int64)
        w = np.array([s["counts"][v] for v in vals.tolist()], dtype=np.int64)
        fig, ax = plt.subplots(figsize=(6, 3))
        bins = min(50, max(1, int(vals.max() - vals.min() + 1)))
        ax.hist(vals, bins=bins, weights=w, color="#1d3557")
        capped = s["max"] >= s["capped_at"]
        ax.set_xlabel(label + (f" (values >= {s['capped_at']} counted at {s['capped_at']})" if capped else ""))
        ax.set_ylabel("records")
        ax.set_title(f"{label}: median {s['p50']}, p99 {s['p99']}, max {s['max']}")
        out.append((label, _png(fig)))
    per = f.get("records_per_shard") or []
    if per:
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.bar(range(len(per)), [p["records"] for p in per], color="#e9c46a", width=1.0 if len(per) > 50 else 0.8)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("shard (in order)")
        ax.set_ylabel("records")
        ax.set_title(f"records per shard ({len(per):,} shards)")
        out.append(("Records per shard", _png(fig)))
    if rep.counts:
        fig, ax = plt.subplots(figsize=(6, 0.6 + 0.3 * len(rep.counts)))
        items = sorted(rep.counts.items(), key=lambda kv: kv[1])
        ax.barh([k for k, _ in items], [v for _, v in items], color="#d62828")
        ax.set_xscale("log")
        ax.set_xlabel("records or shards affected")
        ax.set_title("problems by kind")
        out.append(("Problems by kind", _png(fig)))
    return out


# ------------------------------------------------------------------------------------------------- html
def _table(headers, rows) -> str:
    e = html.escape
    head = "".join(f"<th>{e(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1150px}
h1{font-size:22px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:8px 0} td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f4f4f4} .ok{color:#2a9d8f;font-weight:bold} .bad{color:#d62828;font-weight:bold}
.plots{display:flex;flex-wrap:wrap;gap:16px} figure{margin:0} figcaption{font-size:12px;color:#555}
img.plot{max-width:540px;border:1px solid #eee}
"""


def render_html(rep) -> str:
    e = html.escape
    verdict = ('<span class="ok">OK: no problems found</span>' if rep.ok else
               f'<span class="bad">{sum(rep.counts.values()):,} problems found</span>')
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>laionprep validate: {e(rep.folder)}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>laionprep validate</h1><p><code>{e(rep.folder)}</code> ({e(rep.kind)} folder): {verdict}</p>"]
    parts.append(_table(["", ""], rep.total_rows()))
    if rep.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in rep.notes) + "</ul>")
    if rep.counts:
        parts.append("<h2>Problems by kind</h2>")
        parts.append(_table(["check", "kind", "count", "first at", "what"], rep.problem_rows()))
    plots = _plots(rep)
    parts.append("<h2>Plots</h2><div class='plots'>")
    for title, b64 in plots:
        parts.append(f"<figure><img class='plot' alt='{e(title)}' src='data:image/png;base64,{b64}'>"
                     f"<figcaption>{e(title)}</figcaption></figure>")
    parts.append("</div>")
    dl = rep.figures.get("download")
    if dl:
        parts.append("<h2>Download</h2>")
        parts.append(_table(["", ""], [("rows given to the downloader", f"{dl['rows']:,}"),
                                       ("success", f"{dl['success']:,}"),
                                       ("success rate", "-" if dl["success_rate"] is None
                                        else f"{dl['success_rate']:.2%}"),
                                       ("distinct failure messages", dl["distinct_errors"])]))
        if dl["top_errors"]:
            parts.append("<p>Top failure reasons (from the shard parquets)</p>")
            parts.append(_table(["status: error message", "rows"], dl["top_errors"]))
    for k, c in rep.figures.get("categories", {}).items():
        parts.append(f"<h2>{e(k)}</h2>" + _table([k, "records"], list(c.items())[:30]))
    if rep.figures.get("floats"):
        parts.append("<h2>Numeric columns</h2>")
        rows = [(k, f"{s['n']:,}", _f(s["mean"]), _f(s["min"]), _f(s["max"]), s["sentinel_-1"], s["nan"])
                for k, s in rep.figures["floats"].items()]
        parts.append(_table(["column", "n", "mean", "min", "max", "null (-1)", "NaN"], rows))
    if rep.problems:
        parts.append(f"<h2>Problems (first {min(len(rep.problems), MAX_HTML_ROWS):,} listed; report.json has "
                     f"{len(rep.problems):,})</h2>")
        parts.append(_table(["kind", "where", "what", "count"],
                            [(p.kind, p.where(), p.message, p.count) for p in rep.problems[:MAX_HTML_ROWS]]))
    if rep.quarantined:
        parts.append("<h2>Quarantined shards</h2>")
        parts.append(_table(["shard", "problems", "moved to"],
                            [(q["file"], ", ".join(q["kinds"]), "; ".join(q["moved_to"])) for q in rep.quarantined]))
    parts.append(f"<h2>Shards ({len(rep.shards):,})</h2>")
    parts.append(_table(["file", "records", "decoded", "bytes", "problems"],
                        [(s["file"], s["records"], s["decoded"], f"{s['bytes']:,}",
                          ", ".join(f"{k}: {v}" for k, v in s["problems"].items()) or "-")
                         for s in rep.shards[:MAX_HTML_ROWS]]))
    parts.append(f"<p style='color:#777;font-size:12px'>config: {e(json.dumps(_short_cfg(rep.config)))}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _f(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def _short_cfg(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k != "checks"}
