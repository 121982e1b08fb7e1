"""scripts/mutation.py: the mutant descriptions, the scores and the report it writes (no mutmut run)."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("mutation_script", ROOT / "scripts" / "mutation.py")
mutation = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mutation)

DIFF = """--- avalanche_sst/functional/quantization.py
+++ avalanche_sst/functional/quantization.py
@@ -1,4 +1,4 @@
 def f(x):
-    return x ** 2
+    return x * 2
"""


def test_mutant_description_and_function() -> None:
    assert mutation.changed_lines(DIFF) == ("return x ** 2", "return x * 2")
    assert mutation.function_of("avalanche_sst.functional.quantization.x_encode__mutmut_12") == "encode"
    assert mutation.function_of("avalanche_sst.plugins.sst.xǁSSTPluginǁbefore_backward__mutmut_3") == \
        "SSTPlugin.before_backward"
    assert mutation.module_id("avalanche_sst/functional/quantization.py") == "functional/quantization"
    assert mutation.select_modules("functional/quantization") == ["functional/quantization"]
    assert "functional/sparsity" in mutation.select_modules("functional")
    with pytest.raises(SystemExit, match="not in the mutation scope"):
        mutation.select_modules("experiments/sweep")


def _result(statuses):
    mutants = [{"name": f"m{i}", "function": "f", "before": "a", "after": f"b{i}", "status": s}
               for i, s in enumerate(statuses)]
    return {"module": "functional/x", "tests": ["tests/test_x.py"], "commit": "abc", "date": "d", "mutants": mutants}


def test_score_excludes_equivalent_survivors_and_lists_the_open_ones() -> None:
    # 12 mutants: 7 killed, 2 survived (one equivalent), 1 timed out, 2 not checked (run stopped)
    result = _result(["killed"] * 7 + ["survived", "survived", "timeout", "not checked", "not checked"])
    notes = {("functional/x", "f", "a", "b7"): {"reason": "cannot change a result"}}
    s = mutation.summarise(result, notes)
    assert (s["generated"], s["not_checked"], s["killed"], s["survived"], s["timeout"], s["equivalent"]) == \
        (12, 2, 7, 2, 1, 1)
    assert s["score"] == pytest.approx(7 / 9)
    assert [m["after"] for m in s["open"]] == ["b8", "b9"]
    text = mutation.render([result], notes)
    assert "| `functional/x` | 12 | 2 | 7 | 2 | 1 | 0 | 1 | 77.8% | 95% (**below**, partial: 2 not checked) |" in text
    assert "- equivalent — `f`: `a` → `b7`: cannot change a result" in text
    assert "**open (survived)** — `f`: `a` → `b8`" in text and "**open (timeout)** — `f`: `a` → `b9`" in text


def test_covering_tests_name_the_module_or_its_public_names() -> None:
    source = "def encode(x):\n    pass\n\ndef _private(y):\n    pass\n"
    tests = {"test_a.py": "from avalanche_sst.functional.q import encode", "test_b.py": "import avalanche_sst\n_private()",
             "test_c.py": "import avalanche_sst.functional.q", "test_d.py": "'avalanche_sst.functional.q' encode"}
    assert mutation.covering_test_files("functional/q", tests, source) == ["test_a.py", "test_c.py"]
    # a public name inside a string or a comment (a method variant "sst:encode=False") is no use of it
    tests = {"test_e.py": 'import avalanche_sst\nVARIANT = "sst:encode=False"  # encode\n',
             "test_f.py": "import avalanche_sst\nfrom x import y\ny.encode(1)\n"}
    assert mutation.covering_test_files("functional/q", tests, source) == ["test_f.py"]


def test_every_equivalent_entry_is_complete() -> None:
    entries = tomllib.loads((ROOT / "tests" / "mutation_survivors.toml").read_text())["equivalent"]
    for e in entries:
        assert set(e) == {"module", "function", "before", "after", "reason"}, e
        assert e["module"] in mutation.MODULES and e["before"] != e["after"] and len(e["reason"]) > 20
    keys = [(e["module"], e["function"], e["before"], e["after"]) for e in entries]
    assert len(keys) == len(set(keys))


def test_a_comma_separated_list_selects_each_module_once() -> None:
    assert mutation.select_modules("functional/quantization,functional/reinit,functional/quantization") == \
        ["functional/quantization", "functional/reinit"]


def test_a_recheck_keeps_the_earlier_status_of_mutants_it_did_not_rerun() -> None:
    previous = _result(["killed", "survived", "survived"])
    fresh = _result(["not checked", "killed", "not checked"])  # mutmut reset what it did not rerun
    merged = mutation.merge_statuses(fresh, previous, rerun=("m1", "m2"))
    assert [m["status"] for m in merged["mutants"]] == ["killed", "killed", "not checked"]
