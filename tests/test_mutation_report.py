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


def test_given_test_files_replace_the_selection_and_must_exist() -> None:
    assert mutation.chosen_test_files(None) is None
    assert mutation.chosen_test_files("tests/test_settings.py, tests/test_groups.py") == \
        ["tests/test_settings.py", "tests/test_groups.py"]
    with pytest.raises(SystemExit, match=r"^--tests: no such test file tests/test_nothing\.py; give paths"):
        mutation.chosen_test_files("tests/test_settings.py,tests/test_nothing.py")


def test_source_unchanged_since_compares_the_working_tree_with_the_commit() -> None:
    import subprocess

    head = mutation._git_head()
    if head == "unknown":
        pytest.skip("not a git checkout")
    root = subprocess.run(["git", "rev-list", "--max-parents=0", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.split()[0]
    path = "avalanche_sst/functional/quantization.py"
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", path], cwd=ROOT).returncode
    assert mutation.source_unchanged_since(path, head) is (dirty == 0)
    assert mutation.source_unchanged_since(path, root) is False  # written after the first commit
    assert mutation.source_unchanged_since(path, "unknown") is False


def test_a_rebuilt_recheck_reruns_only_the_recorded_survivors_with_the_recorded_tests(tmp_path, monkeypatch) -> None:
    import json

    previous = _result(["killed", "survived", "not checked", "timeout"])
    previous.update(module="functional/quantization", tests=["tests/test_given.py"], tests_chosen=True)
    monkeypatch.setattr(mutation, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(mutation, "SCRATCH", tmp_path / "scratch")
    (tmp_path / "results").mkdir()
    recorded = tmp_path / "results" / "functional.quantization.json"
    recorded.write_text(json.dumps(previous))
    calls = []
    monkeypatch.setattr(mutation, "prepare", lambda module, tests, resume: calls.append(("prepare", tests, resume))
                        or tmp_path / "scratch")
    monkeypatch.setattr(mutation, "_mutmut", lambda module, work, names: calls.append(("mutmut", names)))
    fresh = _result(["not checked", "killed", "not checked", "survived"])  # mutmut ran m1 and m3 only
    monkeypatch.setattr(mutation, "collect", lambda module, work, tests: {**fresh, "tests": tests, "date": "now"})

    # without mutmut's state a plain recheck says how to rebuild it
    with pytest.raises(RuntimeError, match=r"^no mutmut state of functional/quantization in .*: run "
                                           r"`scripts/mutation.py recheck --rebuild --module functional/quantization`"):
        mutation.recheck_module("functional/quantization")
    monkeypatch.setattr(mutation, "source_unchanged_since", lambda path, commit: False)
    with pytest.raises(RuntimeError, match=r"^avalanche_sst/functional/quantization\.py differs from the one of its "
                                           r"recorded run \(commit abc\)"):
        mutation.recheck_module("functional/quantization", rebuild=True)
    assert calls == []

    monkeypatch.setattr(mutation, "source_unchanged_since", lambda path, commit: commit == "abc")
    mutation.recheck_module("functional/quantization", rebuild=True)
    assert calls == [("prepare", ["tests/test_given.py"], False), ("mutmut", ["m1", "m3"])]
    written = json.loads(recorded.read_text())
    assert [m["status"] for m in written["mutants"]] == ["killed", "killed", "not checked", "survived"]
    assert (written["tests"], written["tests_chosen"], written["commit"], written["date"]) == \
        (["tests/test_given.py"], True, "abc", "d")
    assert written["rechecked"] == {"mutants": 2, "date": "now", "first_run": "d"}
    assert "Tests (given with `--tests`): `tests/test_given.py`." in mutation.render([written], {})


def test_a_recheck_adds_the_test_files_written_since_the_run(tmp_path, monkeypatch) -> None:
    import json

    previous = _result(["killed", "survived"])
    previous.update(module="functional/quantization", tests=["tests/test_given.py"], tests_chosen=True)
    monkeypatch.setattr(mutation, "RESULTS", tmp_path / "results")
    (tmp_path / "results").mkdir()
    recorded = tmp_path / "results" / "functional.quantization.json"
    recorded.write_text(json.dumps(previous))
    calls = []
    monkeypatch.setattr(mutation, "source_unchanged_since", lambda path, commit: True)
    monkeypatch.setattr(mutation, "prepare", lambda module, tests, resume: calls.append(tests) or tmp_path)
    monkeypatch.setattr(mutation, "_mutmut", lambda module, work, names: None)
    monkeypatch.setattr(mutation, "collect", lambda module, work, tests: {**_result(["not checked", "killed"]),
                                                                          "tests": tests, "date": "now"})
    added = ["tests/test_given.py", "tests/test_new.py"]
    mutation.recheck_module("functional/quantization", rebuild=True, add_tests=added)
    assert calls == [["tests/test_given.py", "tests/test_new.py"]]  # the recorded file once, the new one added
    assert json.loads(recorded.read_text())["tests"] == ["tests/test_given.py", "tests/test_new.py"]
    # a name-selected run given an added file becomes a run with chosen files
    previous.update(tests_chosen=False)
    recorded.write_text(json.dumps(previous))
    monkeypatch.setattr(mutation, "test_files_for", lambda module: ["tests/test_named.py"])
    mutation.recheck_module("functional/quantization", rebuild=True, add_tests=["tests/test_new.py"])
    assert calls[-1] == ["tests/test_named.py", "tests/test_new.py"]
    assert json.loads(recorded.read_text())["tests_chosen"] is True
    with pytest.raises(SystemExit, match=r"^--add-tests: no such test file tests/nope\.py"):
        mutation.chosen_test_files("tests/nope.py", "--add-tests")
