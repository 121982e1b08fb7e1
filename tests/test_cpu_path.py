"""avalanche_sst.cpu_path: the child-process probe, and the CPU path recorded next to results."""

from __future__ import annotations

import platform

import pytest
import torch

from avalanche_sst.cpu_path import cpu_path, cpu_path_text, probe_failure


def test_probe_reports_a_native_crash_a_failed_check_and_success():
    assert probe_failure("import os; os.abort()") == "died with SIGABRT"
    assert probe_failure("import faulthandler; faulthandler._sigsegv()") == "died with SIGSEGV"
    assert probe_failure("import sys; print('wrong weight gradient'); sys.exit(3)") == \
        "exited with status 3 (wrong weight gradient)"
    assert probe_failure("import sys; sys.exit(0)") is None


def test_probe_child_sees_the_extra_environment():
    code = "import os, sys; sys.exit(0 if os.environ.get('ONEDNN_MAX_CPU_ISA') == 'AVX' else 4)"
    assert probe_failure(code, {"ONEDNN_MAX_CPU_ISA": "AVX"}) is None
    assert probe_failure(code, {"ONEDNN_MAX_CPU_ISA": "AVX2"}) == "exited with status 4 (no output)"


def test_cpu_path_text():
    path = {"aten_cpu_capability": "AVX512", "onednn_isa": "Intel AVX2", "onednn_max_cpu_isa": "AVX2"}
    assert cpu_path_text(path) == "ATen AVX512, oneDNN Intel AVX2 (ONEDNN_MAX_CPU_ISA=AVX2)"
    assert cpu_path_text({"aten_cpu_capability": "DEFAULT", "onednn_isa": None, "onednn_max_cpu_isa": None}) == \
        "ATen DEFAULT, oneDNN not used"


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or not torch.backends.mkldnn.is_available(),
                    reason="oneDNN's AVX2 path exists on x86-64 builds with oneDNN only")
def test_cpu_path_reads_onednns_isa_under_a_cap(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # every CI machine of this project's kind has AVX2
    path = cpu_path()
    assert path == {"aten_cpu_capability": torch.backends.cpu.get_cpu_capability(), "onednn_isa": "Intel AVX2",
                    "onednn_max_cpu_isa": "AVX2"}
