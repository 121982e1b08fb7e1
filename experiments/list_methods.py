"""Print every sweep method: its name, the settings it runs in, what it is.

    python experiments/list_methods.py            # a Markdown table
"""

from __future__ import annotations

from avalanche_sst.experiments.methods import METHODS, SETTINGS
from avalanche_sst.experiments.registry import accepted_overrides


def methods_table() -> str:
    lines = ["| method | settings | what it is | variant keys (`name:key=value`) |", "|---|---|---|---|"]
    for name in sorted(METHODS):
        method = METHODS[name]
        settings = "all" if set(method.settings) == set(SETTINGS) else ", ".join(method.settings)
        keys = accepted_overrides(method)
        keys_text = "any constructor argument" if keys is None else (", ".join(sorted(keys)) or "-")
        lines.append(f"| `{name}` | {settings} | {method.description} | {keys_text} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(methods_table())
