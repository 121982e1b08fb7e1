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


def test_panels_by_method_keeps_one_panel_up_to_seventy_labels_then_one_per_base_method():
    from avalanche_sst.experiments.figure_style import panels_by_method

    assert panels_by_method(["a", "b", "a"]) == {"": ["a", "b"]}
    assert panels_by_method([f"m{i}" for i in range(70)]) == {"": [f"m{i}" for i in range(70)]}
    grid = [f"{base}:lr_factor={f}" for base in ("m2kd", "lwf_mc", "ewc") for f in range(24)]  # 72 labels
    panels = panels_by_method(grid)
    assert panels == {base: [f"{base}:lr_factor={f}" for f in range(24)] for base in ("m2kd", "lwf_mc", "ewc")}
    assert list(panels) == ["m2kd", "lwf_mc", "ewc"]  # first-seen order
    # a variant's own keys stay with its base method ("m2kd:lam=0,lr_factor=1" is an m2kd curve)
    assert panels_by_method([*grid, "m2kd:lam=0,lr_factor=1"])["m2kd"][-1] == "m2kd:lam=0,lr_factor=1"
    with pytest.raises(ValueError, match="m2kd: 71 labels in one panel"):
        panels_by_method([f"m2kd:lr_factor={f}" for f in range(71)])


def test_a_selection_sweeps_77_curves_are_drawn_in_one_panel_per_method(captured, tmp_path):
    """A selection sweep of 11 methods x 7 grid points (Fig. 4's) wrote its runs, then the accuracy
    figure refused its 77 labels; it now draws 11 panels of 7 distinct curves."""
    from avalanche_sst.experiments.tables import plot_accuracy

    bases = [f"method{i}" for i in range(11)]
    summary = {f"{b}:lr_factor={f}": [(50.0 + k, 1.0) for k in range(5)] for b in bases for f in range(7)}
    plot_accuracy(summary, tmp_path / "accuracy.png", title="grid", split="validation slices")
    (fig,) = captured
    drawn = [ax for ax in fig.axes if ax.get_visible()]
    assert len(drawn) == 11 and len(fig.axes) == 12  # a 6 x 2 grid, the last cell hidden
    for ax, base in zip(drawn, bases):
        assert ax.get_title() == base and ax.get_ylabel() == "Top-1 accuracy on the validation slices (%)"
        labels = [c.get_label() for c in ax.containers]
        assert labels == [f"{base}:lr_factor={f}" for f in range(7)]
        assert len({(c.lines[0].get_color(), c.lines[0].get_marker()) for c in ax.containers}) == 7
    assert fig._suptitle.get_text() == "grid"


def test_panels_by_method_groups_by_the_base_it_is_given():
    from avalanche_sst.experiments.figure_style import panels_by_method

    # 72 labels; the default base (before the first ":") would give "a (quick)" a panel of its own
    labels = [f"{m} (quick)" if i == 0 else f"{m}:x={i} (quick)" for m in ("a", "b") for i in range(36)]
    panels = panels_by_method(labels, base=lambda label: label.split(":")[0].split(" (")[0])
    assert list(panels) == ["a", "b"] and panels["a"] == labels[:36] and panels["b"] == labels[36:]
    assert list(panels_by_method(labels)) == ["a (quick)", "a", "b (quick)", "b"]
