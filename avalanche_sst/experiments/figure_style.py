"""One look for every figure: a distinct colour-and-marker pair per method, the legend outside the axes.

Colours come from matplotlib's 10-colour ``tab10`` cycle and markers from a
list of 7; label i gets colour ``i % 10`` and marker ``i % 7``, so no two of
the first 70 labels share both (7 and 10 have no common divisor), and labels
10 apart, which share a colour, differ in marker and line style.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple",
          "tab:brown", "tab:pink", "tab:gray", "tab:olive", "tab:cyan")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
LINESTYLES = ("-", "--", ":", "-.")


def method_styles(labels: Sequence[str]) -> dict[str, dict]:
    """``{label: {"color", "marker", "linestyle"}}`` for the distinct labels, in their order.

    Pass every label of a figure at once: the pairs are distinct within one call.
    """
    unique = list(dict.fromkeys(labels))
    if len(unique) > len(COLORS) * len(MARKERS):
        raise ValueError(f"{len(unique)} labels in one figure; at most {len(COLORS) * len(MARKERS)} have "
                         "distinct colour-and-marker pairs: split the figure")
    return {label: {"color": COLORS[i % len(COLORS)], "marker": MARKERS[i % len(MARKERS)],
                    "linestyle": LINESTYLES[(i // len(COLORS)) % len(LINESTYLES)]}
            for i, label in enumerate(unique)}


def panels_by_method(labels: Sequence[str], base: Optional[Callable[[str], str]] = None) -> dict[str, list[str]]:
    """The labels of one figure split into panels that :func:`method_styles` can tell apart, by title.

    Up to 70 labels share one untitled panel (key ``""``). Beyond that (a selection sweep's grid: 11
    methods x 7 lr factors), one panel per base method (``base(label)``, by default the label before its
    first ``:``; the panel's title), in first-seen order, so each panel holds one method's points. A base
    method with more than 70 labels of its own raises ValueError.
    """
    unique = list(dict.fromkeys(labels))
    limit = len(COLORS) * len(MARKERS)
    if len(unique) <= limit:
        return {"": unique} if unique else {}
    base = base or (lambda label: label.split(":", 1)[0])
    panels: dict[str, list[str]] = {}
    for label in unique:
        panels.setdefault(base(label), []).append(label)
    crowded = [base for base, members in panels.items() if len(members) > limit]
    if crowded:
        raise ValueError(f"{crowded[0]}: {len(panels[crowded[0]])} labels in one panel; at most {limit} have "
                         "distinct colour-and-marker pairs: split the figure")
    return panels


def legend_outside(ax, where: str = "right", fontsize: int = 8, **kwargs):
    """The axes' legend beside them (``where="right"``) or under them (``"below"``), never over the data."""
    if where == "right":
        placement = dict(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    elif where == "below":
        placement = dict(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3)
    else:
        raise ValueError(f"where must be 'right' or 'below', got {where!r}")
    return ax.legend(fontsize=fontsize, **{**placement, **kwargs})


def save_figure(fig, path: str | Path, dpi: int = 120) -> None:
    """Save with the outside legend included (tight bounding box), then close the figure."""
    import matplotlib.pyplot as plt

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
