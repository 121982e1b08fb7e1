"""Every figure: a distinct colour-and-marker pair per method, the legend outside the axes."""

from __future__ import annotations

import pytest

from avalanche_sst.experiments import figure_style
from avalanche_sst.experiments.figure_style import method_styles

# the 14 lines of docs/fig/equal_compute.png, which once shared 10 colours with the legend over them
FOURTEEN = ["sst", "sst_plus", "finetune", "finetune:budget=sst", "lwf", "lwf:budget=sst", "ewc",
            "ewc:budget=sst", "cumulative", "lwm", "finetune:epochs=(25,16,16,16)", "hpo", "dml", "replay"]


def test_pairs_are_distinct_and_repeat_no_colour_before_ten():
    styles = method_styles(FOURTEEN)
    assert list(styles) == FOURTEEN
    pairs = [(s["color"], s["marker"]) for s in styles.values()]
    assert len(set(pairs)) == 14
    assert len({s["color"] for s in list(styles.values())[:10]}) == 10
    # the pairs the old figure confused now differ
    assert pairs[FOURTEEN.index("finetune")] != pairs[FOURTEEN.index("lwf:budget=sst")]
    assert len(set(map(tuple, (tuple(s.items()) for s in method_styles([f"m{i}" for i in range(70)]).values())))) == 70
    with pytest.raises(ValueError, match="split the figure"):
        method_styles([f"m{i}" for i in range(71)])


@pytest.fixture
def captured(monkeypatch):
    figures = []
    monkeypatch.setattr(figure_style, "save_figure", lambda fig, path, dpi=120: figures.append(fig))
    return figures


def _check_lines_and_legend(fig):
    ax = fig.axes[0]
    pairs = {(c.get_label(), c.lines[0].get_color(), c.lines[0].get_marker()) for c in ax.containers}
    assert len({(c, m) for _, c, m in pairs}) == len({label for label, _, _ in pairs}) == 14
    fig.canvas.draw()
    legend, box = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x0 >= box.x1  # beside the axes, not over the curves


def test_accuracy_and_equal_compute_figures_use_the_style(captured, tmp_path):
    from avalanche_sst.experiments.paper.equal_compute import plot_lines
    from avalanche_sst.experiments.tables import plot_accuracy

    plot_accuracy({m: [(50.0 + i, 1.0), (60.0 + i, 1.0)] for i, m in enumerate(FOURTEEN)}, tmp_path / "a.png")
    plot_lines({m: ([1, 2], [50.0 + i, 60.0], [1.0, 1.0]) for i, m in enumerate(FOURTEEN)}, tmp_path / "b.png",
               "x", "y")
    assert len(captured) == 2
    for fig in captured:
        _check_lines_and_legend(fig)
