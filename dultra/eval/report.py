"""From per-sample records to what people read: the summary table, AUP, the Pareto plot, HTML.

    rows = summarize(records)                     # one row per strategy setting
    methods = method_aup(rows)                    # AUP per method (strategy family)
    write_report(out_dir, rows, methods, metadata)  -> report.json, report.html, pareto.png
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from dultra.eval.accuracy import SampleRecord, tokens_per_forward
from dultra.eval.aup import aup

# Ratio of the means, as the reference's parse_and_get_acc.py: a mean of per-sample ratios would let
# short answers decoded in one or two passes inflate TPF (and AUP, nearly linear in it).
TPF_RULE = "TPF = tokens before the first EOS / NFE, both summed over samples (mean tokens / mean NFE)"
NFE_RULE = "NFE = model forward passes in which the sample still had masks (every step reveals >= 1 token)"
# With a KV cache a block's first step is a full forward that refreshes the cache and decodes; later steps
# recompute only part of the sequence: each is one NFE (dultra.md section 7).
RECOMPUTED = {"prefix": "the block and what follows", "dual": "the block"}


def nfe_rule(cache: str = "none") -> str:
    """How this run counts NFE, cache refreshes included."""
    if cache not in RECOMPUTED:
        return NFE_RULE
    return (f"{NFE_RULE}; with the {cache} cache a block's first step (a full forward that refreshes the cache) "
            f"and each partial forward over {RECOMPUTED[cache]} count one each")


def summarize(records: Sequence[SampleRecord]) -> list[dict]:
    """One row per strategy, in first-seen order: accuracy (%), NFE, TPF, speed, counts. Speed
    (tokens/s, latency) is that of the samples decoded at `batch_size` (`timed_samples` of them)."""
    by_strategy: dict[str, list[SampleRecord]] = defaultdict(list)
    for r in records:
        by_strategy[r.strategy].append(r)
    rows = []
    for strategy, recs in by_strategy.items():
        scored = [r for r in recs if r.correct is not None]
        # A resumed run may have changed --batch-size: speed comes from the most common one's samples.
        sizes = Counter(r.batch_size for r in recs)
        batch_size = max(sizes, key=lambda b: (sizes[b], b))
        timed = [r for r in recs if r.batch_size == batch_size]
        seconds = sum(r.latency_s for r in timed)
        rows.append({
            "strategy": strategy,
            "method": strategy.split(":", 1)[0],
            "samples": len(recs),
            "unscored": len(recs) - len(scored),
            "accuracy": 100.0 * sum(r.correct for r in scored) / len(scored) if scored else float("nan"),
            "nfe": sum(r.nfe for r in recs) / len(recs),
            "tpf": tokens_per_forward(recs),
            "tokens_per_s": sum(r.tokens for r in timed) / seconds if seconds > 0 else float("nan"),
            "latency_s": seconds / len(timed),
            "batch_size": batch_size,
            "timed_samples": len(timed),
        })
    return rows


def method_aup(rows: Sequence[dict], y_max: float | None = None) -> dict[str, dict]:
    """AUP of each method over its settings. y_max: the best accuracy of any method on the task,
    from other runs too (AUPs are comparable only under the same y_max); at least this run's best."""
    finite = [r["accuracy"] for r in rows if r["accuracy"] == r["accuracy"]]
    y_max = max(finite + [y_max or 0.0], default=0.0)
    methods: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        if r["accuracy"] == r["accuracy"]:
            methods[r["method"]].append((r["tpf"], r["accuracy"]))
    return {m: {"aup": aup(points, y_max), "points": sorted(points), "y_max": y_max} for m, points in methods.items()}


# Where a point's label may go, tried in order (offset in points, alignment): right, left,
# above, below, then the diagonals, so that close settings (tau=0.9, tau=0.95) stay legible.
LABEL_SPOTS = [((6, 0), "left", "center"), ((-6, 0), "right", "center"), ((0, 5), "center", "bottom"),
               ((0, -5), "center", "top"), ((6, 8), "left", "bottom"), ((6, -8), "left", "top"),
               ((-6, 8), "right", "bottom"), ((-6, -8), "right", "top")]


def _label_points(ax, labels: list[tuple[str, float, float, str]]) -> None:
    """Annotate (text, x, y, colour) points, each at the first spot where it overlaps no
    marker, the legend or an earlier label and stays inside the axes (else at the first spot)."""
    from matplotlib.transforms import Bbox

    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    r = 4 * ax.figure.dpi / 72  # a default marker's radius (3 points) and a little
    placed = [Bbox.from_extents(px - r, py - r, px + r, py + r)
              for px, py in ax.transData.transform([(x, y) for _, x, y, _ in labels])]
    if ax.get_legend() is not None:
        placed.append(ax.get_legend().get_window_extent(renderer))

    def put(text, x, y, colour, spot):
        offset, ha, va = spot
        label = ax.annotate(text, (x, y), xytext=offset, textcoords="offset points", fontsize=7, color=colour,
                            ha=ha, va=va)
        return label, label.get_window_extent(renderer)

    for point in labels:
        for spot in LABEL_SPOTS:
            label, box = put(*point, spot)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(b) for b in placed):
                break
            label.remove()
        else:
            label, box = put(*point, LABEL_SPOTS[0])
        placed.append(box)


def pareto_figure(rows: Sequence[dict], title: str):
    """Accuracy (%) against mean NFE, one curve per method, each point labelled with its setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    grouped: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        grouped[r["method"]].append(r)
    labels = []
    for method, points in grouped.items():
        points = sorted(points, key=lambda r: r["nfe"])
        (line,) = ax.plot([p["nfe"] for p in points], [p["accuracy"] for p in points], marker="o", label=method)
        labels += [(setting, p["nfe"], p["accuracy"], line.get_color())
                   for p in points if (setting := p["strategy"].partition(":")[2])]
    ax.set_xlabel("mean NFE per sample (lower is faster)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.margins(x=0.08, y=0.08)  # room for the outer points' labels
    fig.tight_layout()  # before labelling: it moves the axes, and the labels are placed in pixels
    _label_points(ax, labels)
    return fig


def pareto_png(rows: Sequence[dict], title: str) -> bytes:
    """pareto_figure as PNG bytes."""
    import matplotlib.pyplot as plt

    fig = pareto_figure(rows, title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def render_html(rows: Sequence[dict], methods: dict[str, dict], metadata: dict, png: bytes, rule: str) -> str:
    """A self-contained page: the table, AUP per method, the plot, and how to reproduce it."""
    cols = ("strategy", "accuracy", "nfe", "tpf", "tokens_per_s", "latency_s", "batch_size", "samples", "unscored")
    fmt = {"accuracy": "{:.1f}", "nfe": "{:.1f}", "tpf": "{:.2f}", "tokens_per_s": "{:.1f}", "latency_s": "{:.3f}"}
    head = "".join(f"<th>{c}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(fmt.get(c, '{}').format(r[c]))}</td>" for c in cols) + "</tr>" for r in rows
    )
    aups = "".join(f"<tr><td>{html.escape(m)}</td><td>{v['aup']:.1f}</td></tr>" for m, v in methods.items())
    image = base64.b64encode(png).decode()
    title = f"{metadata.get('task', '')} — {metadata.get('model', '')}"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>dultra eval</title><style>"
        "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}td:first-child{text-align:left}</style>"
        f"</head><body><h2>{html.escape(title)}</h2><table><tr>{head}</tr>{body}</table>"
        f"<p>{html.escape(rule)}. {html.escape(TPF_RULE)}. "
        "Accuracy in % of scored samples; speed over the samples decoded at batch_size.</p>"
        f"<h3>AUP per method</h3><table><tr><th>method</th><th>AUP</th></tr>{aups}</table>"
        f"<img alt='accuracy vs NFE' src='data:image/png;base64,{image}'>"
        f"<h3>Reproduce</h3><pre>{html.escape(json.dumps(metadata, indent=2))}</pre></body></html>"
    )


def write_report(out_dir: str | Path, rows: list[dict], methods: dict, metadata: dict) -> dict[str, Path]:
    """report.json, pareto.png and report.html in out_dir; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = pareto_png(rows, f"{metadata.get('task', '')}: accuracy vs NFE")
    rule = nfe_rule(metadata.get("settings", {}).get("cache", "none"))
    paths = {"json": out / "report.json", "png": out / "pareto.png", "html": out / "report.html"}
    paths["json"].write_text(json.dumps({"metadata": metadata, "strategies": rows, "methods": methods,
                                         "rules": {"nfe": rule, "tpf": TPF_RULE}}, indent=2))
    paths["png"].write_bytes(png)
    paths["html"].write_text(render_html(rows, methods, metadata, png, rule))
    return paths
