"""The README and docs/ stay true: every command shown in README.md / README_CN.md parses with
the real command-line parser (scripts, configs and options exist, config values are valid), the
cheap ones run, every relative link points to a file that exists, and docs/configs.md lists
exactly the config keys of ms_resnet.config.

Rewrite the key table of docs/configs.md from the code with: python -m tests.test_docs
"""

from __future__ import annotations

import argparse
import ast
import importlib
import re
import shlex
from functools import cache
from pathlib import Path

import pytest

from ms_resnet.config import FIELDS, build_config, parse_config_args
from ms_resnet.errors import ConfigError
from tests.conftest import ROOT, run_command

READMES = ("README.md", "README_CN.md")
DOCS_PAGES = tuple(sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")))
DOCUMENTS = READMES + DOCS_PAGES + ("benchmarks/README.md", "benchmarks/RESULTS.md")
KEY_TABLE_START = "<!-- config-keys: written by `python -m tests.test_docs` -->"
KEY_TABLE_END = "<!-- /config-keys -->"


@cache
def text(document: str) -> str:
    return (ROOT / document).read_text(encoding="utf-8")


# ---------------------------------------------------------------- the config key table

def _range(field) -> str:
    meta = field.metadata
    low, high = meta["low"], meta["high"]
    if low is None and high is None:
        return ""
    if high is None:
        return f"{'>' if meta['low_open'] else '>='} {low:g}"
    left = "(" if meta["low_open"] else "["
    right = ")" if meta["high_open"] else "]"
    return f"{left}{low:g}, {high:g}{right}"


def config_key_table() -> str:
    """The Markdown table of every config key: name, type, default, allowed values, meaning."""
    rows = ["| key | type | default | allowed | meaning |", "| --- | --- | --- | --- | --- |"]
    for name, field in FIELDS.items():
        type_name = str(field.type).removesuffix(" | None")
        default = "none" if field.default is None else str(field.default).lower() \
            if isinstance(field.default, bool) else str(field.default)
        choices = field.metadata["choices"]
        if callable(choices):
            allowed = f"see `ms-resnet {name}s`"
        elif choices:
            allowed = ", ".join(f"`{choice}`" for choice in choices)
        else:
            allowed = _range(field)
        meaning = field.metadata["help"].replace("|", "\\|")
        rows.append(f"| `{name}` | {type_name} | `{default}` | {allowed} | {meaning} |")
    return "\n".join(rows)


def test_configs_page_lists_every_config_key_as_the_code_defines_it() -> None:
    page = text("docs/configs.md")
    assert KEY_TABLE_START in page and KEY_TABLE_END in page
    shown = page.split(KEY_TABLE_START, 1)[1].split(KEY_TABLE_END, 1)[0].strip()
    assert shown == config_key_table(), \
        "docs/configs.md: the config key table is out of date (python -m tests.test_docs)"


# ---------------------------------------------------------------- commands in the READMEs

def shell_commands(document: str) -> list[str]:
    """Every command line of the document's bash code blocks: continuations joined, comments
    dropped, `a && b` split into a and b."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text(document), flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands += [part.strip() for part in line.split("&&")]
    return commands


def _words(command: str) -> list[str]:
    """The command's words without leading VAR=value assignments; <PLACEHOLDER> words become
    a sample value."""
    words = shlex.split(command)
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        words.pop(0)
    return [re.sub(r"<[^>]+>", "x", word) for word in words]


def _check_train(argv: list[str]) -> None:
    """Parse a training command line as train.py does and build its config (which checks the
    config file, every key and every value)."""
    from ms_resnet.train import _platform_aliases, build_parser

    args, overrides = parse_config_args(build_parser(), _platform_aliases(argv))
    if args.config:
        assert (ROOT / args.config).is_file(), args.config
    build_config(ROOT / args.config if args.config else None, overrides)


def _check_parser(module: str, argv: list[str]) -> argparse.Namespace:
    return importlib.import_module(f"ms_resnet.{module}").build_parser().parse_args(argv)


def _app_options() -> set[str]:
    tree = ast.parse(text("inference/app.py"))
    return {arg.value for node in ast.walk(tree) if isinstance(node, ast.Call)
            and getattr(node.func, "attr", "") == "add_argument"
            for arg in node.args if isinstance(arg, ast.Constant)}


SUBCOMMANDS = {"eval": "evaluate", "export": "export", "predict": "predict", "explain": "explain",
               "xihe-pack": "xihe"}
SCRIPTS = {"scripts/run_train.sh": "train", "scripts/run_eval.sh": "eval",
           "scripts/run_export.sh": "export", "scripts/run_distribute_train.sh": "train"}
RUN_AS_WRITTEN = {("ms-resnet", "models"), ("ms-resnet", "datasets")}


def check_command(command: str) -> str:
    """Check one README command against the code; return how it was checked."""
    words = _words(command)
    program, argv = words[0], words[1:]
    if program == "pip":
        assert argv[:2] == ["install", "-e"], command
        extra = re.fullmatch(r"\.(?:\[(\w+)\])?", argv[2])
        assert extra, f"{command}: install what?"
        if extra.group(1):
            assert f"\n{extra.group(1)} = [" in text("pyproject.toml"), f"{command}: no extra"
        return "pip"
    if program == "python" and argv[:2] == ["-m", "pytest"]:
        return "pytest"
    if program == "python" and argv[:2] == ["-m", "ms_resnet"]:
        program, argv = "ms-resnet", argv[2:]
    if program == "bash":
        script, argv = argv[0], argv[1:]
        assert (ROOT / script).is_file(), f"{command}: no {script}"
        entry = SCRIPTS[script]
        if script.endswith("run_distribute_train.sh"):
            assert argv and argv[0].isdigit(), f"{command}: the worker count comes first"
            argv = argv[1:]
        if argv and not argv[0].startswith("-"):  # the optional CONFIG / CKPT argument
            first, argv = argv[0], argv[1:]
            if entry == "train":
                argv = ["--config", first] + argv
            else:
                argv = ["--mindir" if first.endswith(".mindir") else "--ckpt", first] + argv
        elif entry == "train":
            argv = ["--config", "configs/mnist.yaml"] + argv
        program = f"{entry}.py"
    if program == "python" and argv and argv[0].endswith(".py"):
        program, argv = argv[0], argv[1:]
    if program.endswith("app.py"):
        assert (ROOT / "inference" / "app.py").is_file()
        options = {word.split("=", 1)[0] for word in argv if word.startswith("--")}
        assert options <= _app_options(), f"{command}: {options - _app_options()}"
        return "app options"
    if program.startswith("benchmarks/") and program.endswith(".py"):
        result = run_command(program, "--help")
        assert result.returncode == 0, (command, result.stderr)
        options = {word.split("=", 1)[0] for word in argv if word.startswith("--")}
        unknown = {option for option in options if option not in result.stdout}
        assert not unknown, f"{command}: {program} has no {', '.join(sorted(unknown))}"
        return "help"
    if program in ("train.py", "eval.py", "export.py"):
        assert (ROOT / program).is_file(), f"{command}: no {program}"
        program, argv = "ms-resnet", [program.removesuffix(".py")] + argv
    assert program == "ms-resnet", f"{command}: which program is this?"
    sub, argv = argv[0], argv[1:]
    if sub == "train":
        _check_train(argv)
    elif sub in SUBCOMMANDS:
        _check_parser(SUBCOMMANDS[sub], argv)
    elif (program, sub) in RUN_AS_WRITTEN:
        result = run_command("-m", "ms_resnet", sub, *argv)
        assert result.returncode == 0 and result.stdout.strip(), (command, result.stderr)
        return "ran"
    elif sub == "download":
        from ms_resnet.data import DATASETS
        assert argv[0] in DATASETS, command
    else:
        raise AssertionError(f"{command}: unknown ms-resnet command {sub!r}")
    return "parsed"


@pytest.mark.parametrize("document", READMES)
def test_every_command_in_the_readme_is_valid(document: str) -> None:
    commands = shell_commands(document)
    assert len(commands) >= 10, commands
    ways = {command: check_command(command) for command in commands}
    assert "ran" in ways.values() and "parsed" in ways.values(), ways


def test_both_readmes_show_the_same_commands() -> None:
    english, chinese = (shell_commands(document) for document in READMES)
    assert english == chinese


@pytest.mark.parametrize("command, message", [
    ("python train.py --config configs/mnist.yaml --learning_rate 0.1", "learning_rate"),
    ("python train.py --config configs/missing.yaml", "missing.yaml"),
    ("bash scripts/run_train.sh configs/mnist.yaml --epochs -1", "epochs"),
    ("python eval.py --ckpt x.ckpt --nonsense", "nonsense"),
    ("bash scripts/run_evaluation.sh", "no scripts/run_evaluation.sh"),
    ('pip install -e ".[tests]"', "no extra"),
    ("python dist/xihe/inference/app.py --server_port 1", "server_port"),
])
def test_the_command_check_catches_a_wrong_command(command: str, message: str) -> None:
    with pytest.raises((AssertionError, ConfigError), match=message):
        check_command(command)


# ---------------------------------------------------------------- links

def relative_links(path: Path) -> list[str]:
    body = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    links = re.findall(r"\]\(([^)\s]+)\)", body) + re.findall(r'src="([^"]+)"', body)
    return [link for link in links if not re.match(r"[a-z]+:", link)]


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    body = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    headings = re.findall(r"^#+ (.+)$", body, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def broken_links(path: Path) -> list[str]:
    """Relative links of the Markdown file `path` whose file, or heading, does not exist."""
    broken = []
    for link in relative_links(path):
        target, _, anchor = link.partition("#")
        target_path = (path.parent / target).resolve() if target else path
        missing_anchor = (target_path.exists() and anchor and target_path.suffix == ".md"
                          and anchor not in anchors(target_path))
        if not target_path.exists() or missing_anchor:
            broken.append(link)
    return broken


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_relative_link_points_to_an_existing_file(document: str) -> None:
    assert not broken_links(ROOT / document), document


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## 快速上手 `x`\n", encoding="utf-8")
    (tmp_path / "page.md").write_text(
        "# Page\n[a](other.md) [b](other.md#other-page) [c](other.md#快速上手-x) [d](#page)\n"
        "[e](missing.md) [f](other.md#nowhere) [g](#nowhere) [h](https://example.org/x)\n"
        "```bash\n[i](in_code.md)\n```\n", encoding="utf-8")
    assert broken_links(tmp_path / "page.md") == ["missing.md", "other.md#nowhere", "#nowhere"]


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {link.partition("#")[0] for link in relative_links(ROOT / "README.md")}
    pages = set(DOCS_PAGES)
    assert not pages - linked, f"README.md links none of {sorted(pages - linked)}"


def write_key_table() -> None:
    """Replace the key table of docs/configs.md by the one the code defines."""
    page = text("docs/configs.md")
    before, rest = page.split(KEY_TABLE_START, 1)
    after = rest.split(KEY_TABLE_END, 1)[1]
    table = f"{KEY_TABLE_START}\n{config_key_table()}\n{KEY_TABLE_END}"
    (ROOT / "docs" / "configs.md").write_text(before + table + after, encoding="utf-8")


if __name__ == "__main__":
    write_key_table()
