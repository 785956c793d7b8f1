"""The figures in the docs are the committed runs' figures.

- Every run in results/ is quoted in the table of docs/experiments.md exactly as its
  metrics.json says: epochs, best / final test accuracy, training seconds.
- The Results table of README.md and README_CN.md has one row per shipped config; each row that
  links a run quotes its metrics.json, and that run was trained with the config of its row.
- The time-to-accuracy table is the one `time_to_accuracy.py --report` builds from results/,
  and both READMEs quote its verdict.
"""

import json
import re
from functools import cache
from pathlib import Path

import pytest

from ms_resnet.config import Config, build_config
from tests.conftest import ROOT, run_command

RUNS = sorted(path.parent for path in (ROOT / "results").glob("*/metrics.json"))
EXPERIMENTS = "docs/experiments.md"
READMES = {"README.md": "## Results", "README_CN.md": "## 结果"}
CONFIGS = sorted(f"configs/{path.name}" for path in (ROOT / "configs").glob("*.yaml"))
# What a run may change without being another recipe: where files are, and whether to export.
PLACE_KEYS = {"data_dir", "ckpt_dir", "export_mindir", "num_parallel_workers"}
# Read from the data folder by a --dataset folder run (the config leaves them to the folder).
FOLDER_DERIVED_KEYS = {"classes", "mean", "std"}


@cache
def document_text(document: str) -> str:
    return (ROOT / document).read_text(encoding="utf-8")


def section(document: str, heading: str) -> str:
    return document_text(document).split(heading, 1)[1].split("\n## ", 1)[0]


def table_rows(text: str) -> list[list[str]]:
    rows = [[cell.strip() for cell in line.replace("**", "").strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")]
    return [row for row in rows if not set(row[0]) <= {"-", " "}][1:]  # no header, separator


def accuracies(metrics: dict) -> str:
    return (f"{100 * metrics['best_accuracy']:.2f}% / "
            f"{100 * metrics['epochs'][-1]['test_accuracy']:.2f}%")


def training_seconds(metrics: dict) -> str:
    return f"{round(sum(epoch['seconds'] for epoch in metrics['epochs'])):,} s"


def test_results_has_runs() -> None:
    assert len(RUNS) >= 3, RUNS


@pytest.mark.parametrize("run", RUNS, ids=lambda path: path.name)
def test_experiments_page_quotes_each_run_from_its_metrics(run: Path) -> None:
    """Columns: config | command | epochs | best / final accuracy | training time | wall time."""
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    rows = [row for row in table_rows(section(EXPERIMENTS, "## All runs"))
            if len(row) == 6 and accuracies(metrics) in row[3]]
    if len(rows) > 1:  # runs with the same accuracies (the same seed on two CPUs): by the link
        rows = [row for row in rows if f"results/{run.name}/)" in row[5]]
    assert len(rows) == 1, f"{len(rows)} rows quote {accuracies(metrics)} ({run.name})"
    row = rows[0]
    assert row[2] == str(len(metrics["epochs"])), f"{run.name}: {row}"
    assert training_seconds(metrics) in row[4], f"{run.name}: {row}"
    assert f"results/{run.name}/)" in document_text(EXPERIMENTS), f"no link to {run.name}"


def readme_rows(readme: str) -> dict[str, list[str]]:
    """The Results table's rows by config file (config | model | accuracy | time | machine |
    files)."""
    rows = table_rows(section(readme, READMES[readme]))
    by_config = {}
    for row in rows:
        config = re.search(r"`(configs/\w+\.yaml)`", row[0]).group(1)
        assert config not in by_config, f"{readme}: two rows for {config}"
        by_config[config] = row
    return by_config


@pytest.mark.parametrize("readme", READMES)
def test_readme_results_have_one_row_per_shipped_config(readme: str) -> None:
    assert sorted(readme_rows(readme)) == CONFIGS


@pytest.mark.parametrize("readme", READMES)
def test_readme_results_quote_the_runs_they_link(readme: str) -> None:
    linked = 0
    for config, row in readme_rows(readme).items():
        link = re.search(r"\((results/[\w/]+)/\)", row[5])
        if not link:
            assert "%" not in row[2] + row[3], f"{readme}: {config} quotes a figure without a run"
            continue
        linked += 1
        metrics = json.loads((ROOT / link.group(1) / "metrics.json").read_text(encoding="utf-8"))
        assert accuracies(metrics) in row[2], f"{readme}: {config}: {row}"
        assert training_seconds(metrics) in row[3], f"{readme}: {config}: {row}"
        shipped = build_config(ROOT / config).to_dict()
        epochs = len(metrics["epochs"])
        assert str(epochs) in row[3], f"{readme}: {config}: {epochs} epochs: {row}"
        if epochs != shipped["epochs"]:  # a run stopped early says so
            assert str(shipped["epochs"]) in row[2], f"{readme}: {config}: {row}"
        # A key added after the run was recorded had its default value then.
        recorded = {**Config().to_dict(), **metrics["config"]}
        differs = {key for key, value in shipped.items()
                   if recorded[key] != value} - PLACE_KEYS - {"epochs"}
        if shipped["dataset"] == "folder":
            differs -= {key for key in FOLDER_DERIVED_KEYS if shipped[key] is None}
        assert not differs, f"{readme}: {link.group(1)} was not trained with {config}: {differs}"
        assert row[4], f"{readme}: {config}: which machine?"
    assert linked >= 2


@pytest.mark.parametrize("folder, documents", [
    # This machine's runs (AVX-512), quoted in docs/speed.md and in RESULTS.md.
    ("time_to_accuracy", ("docs/speed.md", "benchmarks/RESULTS.md")),
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
    if folder == "time_to_accuracy":  # the READMEs' summary: both times and the ratio
        tutorial, default = re.search(r"final accuracy ~?([\d.]+ s) / .* 99\.5% ~?([\d.]+ s)",
                                      verdict).groups()
        for readme, heading in READMES.items():
            summary = section(readme, heading)
            for figure in (tutorial, default, f"{ratio}x"):
                assert figure in summary, f"{readme} Results do not quote {figure} ({verdict})"
