"""The report's chart: labels of near-coincident points do not overlap (measured on the drawn
figure, in display coordinates), and the placement itself is deterministic."""

from __future__ import annotations

import itertools

from matplotlib.text import Text

from boom_ray.eval.chart import candidates, chart_figure, overlap, place_boxes, render_chart
from boom_ray.eval.report import RunModel
from boom_ray.eval.stats import Interval

MODELS = ([RunModel("base", "base", "p", "base")]
          + [RunModel(f"bag{r}", f"bag{r}", "p", "bag") for r in (20, 40, 60, 80, 100)]
          + [RunModel("merge-multislerp", "multislerp", "p", "merge"), RunModel("merge-linear", "linear", "p", "merge")])
POINTS = [(0.4563, 0.2073), (0.5891, 0.3920), (0.5895, 0.3922), (0.5900, 0.3921), (0.5899, 0.3924),
          (0.5898, 0.3924), (0.5898, 0.3924), (0.5899, 0.3924)]  # the demo's merges sit on the bags
RESULTS = {m.key: {"id_mean": x, "ood_mean": y} for m, (x, y) in zip(MODELS, POINTS)}


def _label_boxes(fig):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = {m.label for m in MODELS}
    texts = [t for t in fig.axes[0].texts if t.get_text() in labels]
    # the text's own extent (an Annotation's would include its leader line)
    return texts, [Text.get_window_extent(t, renderer) for t in texts]


def test_labels_of_near_coincident_points_do_not_overlap():
    evidence = {"intervals": {m.key: {"id_mean": Interval(x, x - 0.01, x + 0.01, 3),
                                      "ood_mean": Interval(y, y - 0.02, y + 0.015, 3)}
                              for m, (x, y) in zip(MODELS, POINTS)}}
    for ev in (None, evidence):
        fig = chart_figure(MODELS, RESULTS, ev)
        texts, boxes = _label_boxes(fig)
        assert sorted(t.get_text() for t in texts) == sorted(m.label for m in MODELS)
        for (a, ta), (b, tb) in itertools.combinations(zip(boxes, texts), 2):
            assert not a.overlaps(b), f"{ta.get_text()} {a} overlaps {tb.get_text()} {b}"
        frame = fig.axes[0].get_window_extent(fig.canvas.get_renderer())
        for box in boxes:  # inside the axes
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
    assert render_chart(MODELS, RESULTS, evidence)[:8] == b"\x89PNG\r\n\x1a\n"


def test_placement_is_greedy_deterministic_and_prefers_the_nearest_free_spot():
    frame = (0.0, 0.0, 400.0, 300.0)
    alone = place_boxes([(100.0, 100.0)], [(40.0, 12.0)], frame)
    assert alone == [candidates((100.0, 100.0), (40.0, 12.0))[0]]  # upper right, where labels always went
    points, sizes = [(200.0, 150.0)] * 6, [(50.0, 14.0)] * 6
    boxes = place_boxes(points, sizes, frame)
    assert boxes == place_boxes(points, sizes, frame)
    assert all(overlap(a, b) == 0 for a, b in itertools.combinations(boxes, 2))
    # a label pushed to the frame's corner stays inside it
    (corner,) = place_boxes([(398.0, 298.0)], [(40.0, 12.0)], frame)
    assert corner[2] <= 400 and corner[3] <= 300
