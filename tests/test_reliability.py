"""Rows of the reliability table (docs/reliability.md) not covered elsewhere: oversized images
refused from their header, and no pickle loading of user files."""

from __future__ import annotations

import ast
import re
import struct
import zlib
from pathlib import Path

import mindspore as ms

from ms_resnet.models import create_model
from tests.conftest import ROOT, run_command


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with almost no pixel data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def test_a_20000x20000_image_is_refused_before_decoding(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("dataset: mnist\nmodel: resnet20\n")
    ms.save_checkpoint(create_model("resnet20", 10, 1, 28), str(tmp_path / "best.ckpt"))
    (tmp_path / "huge.png").write_bytes(_png_header_only(20000, 20000))
    result = run_command("-m", "ms_resnet", "predict", str(tmp_path / "huge.png"),
                         "--ckpt", str(tmp_path / "best.ckpt"))
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: {tmp_path / 'huge.png'}: 20000x20000 image is "
                                     "larger than the limit of 50000000 pixels (--max_pixels)")


def test_no_code_path_unpickles_files() -> None:
    """pickle (and numpy's allow_pickle) can run code hidden in a file: user files are never
    read that way."""
    offenders = []
    for path in sorted((ROOT / "ms_resnet").rglob("*.py")) + [ROOT / "inference" / "app.py"]:
        if not path.is_file():
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n.split(".")[0] in ("pickle", "cPickle", "dill", "joblib")
                       for n in names):
                    offenders.append(f"{path.name}:{node.lineno} imports a pickle module")
            if isinstance(node, ast.keyword) and node.arg == "allow_pickle":
                offenders.append(f"{path.name}:{node.lineno} passes allow_pickle")
            # torch.load unpickles unless told to read tensors only.
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr == "load" and getattr(node.func.value, "id", "") == "torch" \
                    and not any(k.arg == "weights_only" and getattr(k.value, "value", None) is True
                                for k in node.keywords):
                offenders.append(f"{path.name}:{node.lineno} calls torch.load without "
                                 "weights_only=True")
    assert offenders == []


def test_every_test_named_in_the_reliability_table_exists() -> None:
    table = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    named = re.findall(r"`(test_\w+\.py)::(test_\w+)`", table)
    assert len(named) >= 25
    for file_name, test_name in named:
        source = (ROOT / "tests" / file_name).read_text(encoding="utf-8")
        assert f"def {test_name}(" in source, f"{file_name}::{test_name}"
