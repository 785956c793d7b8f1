"""Every committed run in results/ is quoted in the README Results tables (English and Chinese)
exactly as its metrics.json says: epochs, best / final test accuracy, training seconds; and the
time-to-accuracy table is the one `time_to_accuracy.py --report` builds from results/."""

import json
import re
from functools import cache
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_command

RUNS = sorted(path.parent for path in (ROOT / "results").glob("*/metrics.json"))
READMES = {"README.md": "## Results", "README_CN.md": "## 结果"}


@cache
def document_text(document: str) -> str:
    return (ROOT / document).read_text(encoding="utf-8")


def results_rows(readme: str) -> list[list[str]]:
    """Cells of the run rows (config | command | epochs | accuracy | training time | wall time)
    in the readme's Results section, bold markers removed."""
    section = document_text(readme).split(READMES[readme], 1)[1].split("\n## ", 1)[0]
    rows = [[cell.strip() for cell in line.replace("**", "").strip("|").split("|")]
            for line in section.splitlines() if line.startswith("|")]
    return [row for row in rows if len(row) == 6 and row[2].isdigit()]


def test_results_has_runs() -> None:
    assert len(RUNS) >= 3, RUNS


@pytest.mark.parametrize("readme", READMES)
@pytest.mark.parametrize("run", RUNS, ids=lambda path: path.name)
def test_readme_quotes_each_run_from_its_metrics(run: Path, readme: str) -> None:
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    epochs = metrics["epochs"]
    accuracies = f"{100 * metrics['best_accuracy']:.2f}% / {100 * epochs[-1]['test_accuracy']:.2f}%"
    rows = [row for row in results_rows(readme) if accuracies in row[3]]
    assert len(rows) == 1, f"{readme}: {len(rows)} Results rows quote {accuracies} ({run.name})"
    row = rows[0]
    assert row[2] == str(len(epochs)), f"{readme}: {run.name} ran {len(epochs)} epochs: {row}"
    training = f"{round(sum(epoch['seconds'] for epoch in epochs)):,} s"
    assert training in row[4], f"{readme}: {run.name} trained for {training}: {row}"
    assert f"(results/{run.name}/)" in document_text(readme), \
        f"{readme} does not link results/{run.name}/"


@pytest.mark.parametrize("folder, documents", [
    # This machine's runs (AVX-512), quoted in both READMEs and in RESULTS.md.
    ("time_to_accuracy", ("README.md", "README_CN.md", "benchmarks/RESULTS.md")),
    # The earlier AVX2 machine's runs, kept in RESULTS.md.
    ("time_to_accuracy_avx2", ("benchmarks/RESULTS.md",)),
])
def test_time_to_accuracy_tables_are_rebuilt_from_the_committed_runs(
        folder: str, documents: tuple[str, ...], tmp_path: Path) -> None:
    result = run_command("benchmarks/time_to_accuracy.py", "--report",
                         "--out", str(ROOT / "results" / folder),
                         "--plot", str(tmp_path / "plot.png"))
    lines = result.stdout.splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| run |")]
    assert len(rows) == 4, (lines, result.stderr)  # separator + three runs
    verdict = next(line for line in lines if line.startswith("speed-up:"))
    # The exit code is the verdict: 0 only for >= 10x with an accuracy at least the tutorial's.
    ratio = float(re.search(r"= ~?([0-9.]+)x \(target", verdict).group(1))
    assert result.returncode == (0 if ratio >= 10 and verdict.endswith(": ok") else 1), verdict
    for document in documents:
        missing = [row for row in rows[1:] if row not in document_text(document).splitlines()]
        assert not missing, f"{document} does not quote the report's rows: {missing}"
    assert verdict in document_text("benchmarks/RESULTS.md")
