"""The benchmarks' idle check samples CPU time now, not the load average that lags a minute."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# benchmarks/ is not a package: its scripts import specs from their own folder.
sys.path.insert(0, str(ROOT / "benchmarks"))
import specs


def test_a_busy_core_is_seen_and_warned_about(capsys: pytest.CaptureFixture) -> None:
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = specs.busy_cores(1.0)
        specs.warn_if_busy()
    finally:
        spinner.kill()
        spinner.wait()
    assert 0.7 <= busy <= (os.cpu_count() or 1) + 0.05
    assert "WARNING: the machine is not idle" in capsys.readouterr().out
