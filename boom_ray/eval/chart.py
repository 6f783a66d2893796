"""The report's chart: one point per model at (ID mean, OOD mean), with 95 % error bars when the
evidence has them, and labels placed so that they do not overlap one another or the points.

Label placement is a small deterministic greedy search in display coordinates (pixels): each
label, in the models' order, tries candidate boxes on rings of growing distance around its point
(eight directions per ring, the nearest first) and takes the first with the least overlap with
the labels already placed, the points' markers and the area outside the axes. Text sizes come from
the renderer (`Text.get_window_extent`), so the boxes are the ones that are drawn.
"""

from __future__ import annotations

import io
from typing import Any, Sequence

COLORS = {"base": "tab:gray", "bag": "tab:blue", "merge": "tab:red"}
RINGS = (8.0, 14.0, 22.0, 32.0, 44.0, 58.0, 75.0, 95.0)
"""Distances (pixels) of the candidate boxes from their point, nearest first (the first clears the
marker)."""
MARKER = 5.0
"""Half-size (pixels) of the square a point's marker is taken to cover."""

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels


def overlap(a: Box, b: Box) -> float:
    """Area of the intersection of two boxes (0 when they only touch or are apart)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def outside(box: Box, frame: Box) -> float:
    """Area of `box` outside `frame`."""
    return (box[2] - box[0]) * (box[3] - box[1]) - overlap(box, frame)


def candidates(point: tuple[float, float], size: tuple[float, float]) -> list[Box]:
    """Candidate label boxes around `point`, ring by ring: upper right first (where the label
    always went), then right, lower right, above, below, upper left, left, lower left."""
    (px, py), (w, h) = point, size
    out = []
    for r in RINGS:
        d = r * 0.7071
        for dx, dy in ((d, d), (r, -h / 2), (d, -h - d), (-w / 2, r), (-w / 2, -h - r),
                       (-w - d, d), (-w - r, -h / 2), (-w - d, -h - d)):
            out.append((px + dx, py + dy, px + dx + w, py + dy + h))
    return out


def place_boxes(points: Sequence[tuple[float, float]], sizes: Sequence[tuple[float, float]],
                frame: Box) -> list[Box]:
    """One box per label (pixels), chosen greedily in order; pure and deterministic."""
    markers = [(x - MARKER, y - MARKER, x + MARKER, y + MARKER) for x, y in points]
    placed: list[Box] = []
    for point, size in zip(points, sizes):
        def cost(box: Box) -> float:
            return (sum(overlap(box, p) for p in placed) + sum(overlap(box, m) for m in markers)
                    + outside(box, frame))

        placed.append(min(candidates(point, size), key=cost))  # min keeps the first of equal costs
    return placed


def gap(box: Box, point: tuple[float, float]) -> float:
    """Distance (pixels, per axis) from `point` to the nearest side of `box`; 0 inside it."""
    x, y = point
    return max(box[0] - x, x - box[2], box[1] - y, y - box[3], 0.0)


def place_labels(ax: Any, xs: Sequence[float], ys: Sequence[float], labels: Sequence[str],
                 fontsize: float = 9) -> tuple[list[Any], list[Box]]:
    """Annotate each point with its label where `place_boxes` puts it (a thin leader line when it
    is not next to its point); call it once the layout and the axis limits are final. Returns (the
    annotations, their text boxes in pixels)."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    to_points = 72.0 / fig.dpi
    points = [(float(px), float(py)) for px, py in ax.transData.transform(list(zip(xs, ys)))]
    sizes = []
    for label in labels:  # measured by the renderer, with the font the label is drawn in
        probe = ax.text(0, 0, label, fontsize=fontsize, ha="left", va="bottom")
        extent = probe.get_window_extent(renderer)
        probe.remove()
        sizes.append((extent.width, extent.height))
    bb = ax.get_window_extent(renderer)
    boxes = place_boxes(points, sizes, (bb.x0, bb.y0, bb.x1, bb.y1))
    anns = []
    for label, x, y, (px, py), box in zip(labels, xs, ys, points, boxes):
        leader = ({"arrowstyle": "-", "color": "0.55", "linewidth": 0.6, "shrinkA": 0, "shrinkB": 3}
                  if gap(box, (px, py)) > RINGS[1] + 2 else None)
        anns.append(ax.annotate(label, (x, y), xytext=((box[0] - px) * to_points, (box[1] - py) * to_points),
                                textcoords="offset points", ha="left", va="bottom", fontsize=fontsize,
                                arrowprops=leader))
    return anns, boxes


def _errors(evidence: dict[str, Any] | None, models: Sequence[Any], agg: str) -> list[list[float]] | None:
    """Asymmetric error bars (below, above) of each model's `agg` interval, or None."""
    ivs = [((evidence or {}).get("intervals") or {}).get(m.key) for m in models]
    ivs = [iv[agg] if iv else None for iv in ivs]
    if not all(iv is not None and iv.lo is not None for iv in ivs):
        return None
    return [[iv.mean - iv.lo for iv in ivs], [iv.hi - iv.mean for iv in ivs]]


def chart_figure(models: Sequence[Any], results: dict[str, dict[str, Any]],
                 evidence: dict[str, Any] | None = None):
    """The chart's matplotlib Figure (Agg backend); `render_chart` is its PNG."""
    import matplotlib  # lazy: matplotlib; the report imports this module, a chart is drawn once

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: matplotlib; after use("Agg")

    ids = [results[m.key]["id_mean"] for m in models]
    oods = [results[m.key]["ood_mean"] for m in models]
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    ax.grid(True, alpha=0.3)
    if not all(v is not None for v in ids + oods):
        which, values = ("OOD", oods) if all(v is not None for v in oods) else ("ID", ids)
        values = [v if v is not None else 0.0 for v in values]
        ax.barh([m.label for m in models], values, color=[COLORS[m.kind] for m in models])
        ax.set_xlabel(f"{which} mean (main metric)")
        ax.set_title(f"{which} mean per model (the run has no {'ID' if which == 'OOD' else 'OOD'} suites)")
        fig.tight_layout()
        return fig
    xerr, yerr = _errors(evidence, models, "id_mean"), _errors(evidence, models, "ood_mean")
    for i, (m, x, y) in enumerate(zip(models, ids, oods)):
        if xerr and yerr:
            ax.errorbar([x], [y], xerr=[[xerr[0][i]], [xerr[1][i]]], yerr=[[yerr[0][i]], [yerr[1][i]]],
                        color=COLORS[m.kind], alpha=0.5, linewidth=1, capsize=2, zorder=2)
        ax.scatter([x], [y], color=COLORS[m.kind], s=40, zorder=3)
    ax.set_xlabel("in-domain mean (main metric)")
    ax.set_ylabel("out-of-domain mean (main metric)")
    ax.set_title("ID vs OOD per model")
    for kind, color in COLORS.items():
        if any(m.kind == kind for m in models):
            ax.scatter([], [], color=color, label=kind)
    ax.margins(0.15)
    fig.tight_layout()
    ax.set_xlim(ax.get_xlim())  # frozen: the labels are placed on these limits
    ax.set_ylim(ax.get_ylim())
    place_labels(ax, ids, oods, [m.label for m in models])
    ax.legend(loc="best", fontsize=8)  # "best" avoids the points and the labels placed above
    return fig


def render_chart(models: Sequence[Any], results: dict[str, dict[str, Any]],
                 evidence: dict[str, Any] | None = None) -> bytes:
    """PNG: one labelled point per model at (ID mean, OOD mean), with 95 % error bars when the
    evidence has them; bars when one of the two is missing."""
    import matplotlib.pyplot as plt  # lazy: matplotlib; see chart_figure

    fig = chart_figure(models, results, evidence)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
