"""XiHe deployment: `ms-resnet xihe-pack`, and the Gradio app of inference/ started the way
XiHe's inference runtime starts it (the files named in config.json beside app.py, then
`python3 app.py`), used through its HTTP API and through a real headless Chromium."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT, run_command

INFERENCE = ROOT / "inference"
EXAMPLES = INFERENCE / "examples" / "mnist"
SEVEN = EXAMPLES / "mnist_test_00_label_7.png"  # the first MNIST test image
# The system's Chromium (Debian's package; Ubuntu's is chromium-browser): never downloaded.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
SCREENSHOT = ROOT / "docs" / "images" / "xihe_app.png"
START_TIMEOUT = 90
LOCAL = "127.0.0.1"
XIHE_PORT = 7860  # what XiHe opens: app.py's default


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCAL, 0))
        return sock.getsockname()[1]


def model_file_names() -> list[str]:
    entries = json.loads((INFERENCE / "config.json").read_text(encoding="utf-8"))["model_path"]
    return [entry.rsplit("/", 1)[-1] for entry in entries]


def http_ok(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
    try:
        with opener.open(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def serve_app(model_dir: Path, tmp_path_factory: pytest.TempPathFactory,
              as_xihe_runs_it: bool = False):
    """inference/ copied alone as XiHe's runtime has it (links kept as links, not followed), the
    model files from config.json beside app.py, and `python3 app.py` run from there; stopped
    afterwards. as_xihe_runs_it: no arguments and no PORT, so the app's own default, port 7860
    on every interface; else a free local port."""
    folder = tmp_path_factory.mktemp("xihe") / "inference"
    shutil.copytree(INFERENCE, folder, symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in model_file_names():
        shutil.copyfile(model_dir / name, folder / name)
    port = XIHE_PORT if as_xihe_runs_it else free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("MS_RESNET_MODEL", "PORT", "GRADIO_SERVER_PORT", "HOST")}
    env.update(GRADIO_ANALYTICS_ENABLED="False", NO_PROXY=LOCAL, no_proxy=LOCAL,
               PYTHONUNBUFFERED="1", **({} if as_xihe_runs_it else {"PORT": str(port)}))
    if as_xihe_runs_it:
        with socket.socket() as sock:
            assert sock.connect_ex((LOCAL, port)) != 0, f"port {port} is taken: free it first"
    saved_no_proxy = os.environ.get("NO_PROXY")
    os.environ["NO_PROXY"] = LOCAL  # for gradio_client's httpx in this process
    log_path = folder.parent / "app.log"
    url = f"http://{LOCAL}:{port}/"
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen([sys.executable, "app.py",
                                    *([] if as_xihe_runs_it else ["--host", LOCAL])], cwd=folder,
                                   env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not http_ok(url):
            log_tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
            assert process.poll() is None, f"app.py exited with {process.returncode}:\n{log_tail}"
            assert time.monotonic() < deadline, f"app.py not serving after {START_TIMEOUT} s:\n" \
                                                f"{log_tail}"
            time.sleep(0.5)
        yield {"url": url, "folder": folder, "log": log_path, "process": process}
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if saved_no_proxy is None:
            os.environ.pop("NO_PROXY", None)
        else:
            os.environ["NO_PROXY"] = saved_no_proxy


@pytest.fixture(scope="module")
def xihe_app(mnist_run: dict, tmp_path_factory: pytest.TempPathFactory):
    yield from serve_app(mnist_run["dir"], tmp_path_factory, as_xihe_runs_it=True)


@pytest.fixture(scope="module")
def client(xihe_app: dict):
    from gradio_client import Client

    return Client(xihe_app["url"], verbose=False)


def classify(client, path: Path, invert: str = "auto") -> tuple[dict, str]:
    label, details, _ = classify_with_heat_map(client, path, invert)
    return label, details


def classify_with_heat_map(client, path: Path, invert: str = "auto") -> tuple[dict, str, str]:
    """The app's answer: label, details and the file of its Grad-CAM picture."""
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), invert, api_name="/classify")


def check_probabilities(label: dict) -> None:
    confidences = [c["confidence"] for c in label["confidences"]]
    assert len(confidences) == 3  # top 3 of 10 classes
    assert confidences == sorted(confidences, reverse=True)
    assert all(0.0 <= c <= 1.0 for c in confidences) and sum(confidences) <= 1.0 + 1e-6
    assert label["confidences"][0]["label"] == label["label"]


def test_app_started_like_xihe_classifies_a_real_mnist_digit(xihe_app: dict, client,
                                                             tmp_path: Path) -> None:
    log = xihe_app["log"].read_text(encoding="utf-8")
    assert f"model {xihe_app['folder'] / model_file_names()[0]}" in log  # found via config.json
    assert "Grad-CAM at layers.2" in log  # best_explain.mindir found via config.json
    label, details, heat = classify_with_heat_map(client, SEVEN)
    assert label["label"] == "7", (label, details)
    assert label["confidences"][0]["confidence"] > 0.5
    check_probabilities(label)
    assert "28x28 image, not inverted" in details
    # The heat map: the digit enlarged 10x with the colour map blended over it, hottest (red)
    # on the strokes' region, not in a corner of the black background.
    with Image.open(heat) as picture:
        pixels = np.asarray(picture.convert("RGB"), np.int16)
    assert pixels.shape == (280, 280, 3)
    redness = pixels[..., 0] - pixels[..., 2]
    hot_rows, hot_cols = np.nonzero(redness >= np.percentile(redness, 99))
    digit = np.asarray(Image.open(SEVEN).convert("L").resize((280, 280), Image.NEAREST)) > 127
    rows, cols = np.nonzero(digit)
    assert rows.min() - 40 <= np.median(hot_rows) <= rows.max() + 40
    assert cols.min() - 40 <= np.median(hot_cols) <= cols.max() + 40

    # The same digit as users draw it: dark on light paper, larger. "auto" inverts it.
    dark = Image.open(SEVEN).resize((112, 112), Image.BICUBIC).point(lambda v: 255 - v)
    dark.save(tmp_path / "dark_seven.png")
    label, details = classify(client, tmp_path / "dark_seven.png")
    assert label["label"] == "7" and "inverted (light background)" in details, (label, details)
    label, details = classify(client, tmp_path / "dark_seven.png", invert="no")
    assert "not inverted" in details

    # A drawing as the sketchpad sends it: black strokes on a transparent 280x280 canvas, the
    # digit small and off-centre; the app flattens, inverts, crops and centres it as MNIST.
    from gradio_client import handle_file

    ink = np.asarray(Image.open(SEVEN).resize((140, 140), Image.BICUBIC))
    canvas = np.zeros((280, 280, 4), np.uint8)
    canvas[20:160, 120:260, 3] = ink  # alpha = ink, colour black
    Image.fromarray(canvas, "RGBA").save(tmp_path / "drawing.png")
    drawing = {"background": None, "layers": [], "composite": handle_file(str(tmp_path /
                                                                              "drawing.png"))}
    label, details, _ = client.predict(drawing, "auto", api_name="/classify_drawing")
    assert label["label"] == "7" and "centred as in MNIST" in details, (label, details)
    check_probabilities(label)


def huge_png_header(path: Path, width: int = 20000, height: int = 20000) -> None:
    """A small file whose PNG header claims width x height pixels."""
    import struct
    import zlib

    Image.new("L", (8, 8)).save(path)
    data = bytearray(path.read_bytes())
    header = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + header))
    path.write_bytes(bytes(data))


def test_bad_uploads_show_a_message_and_the_server_keeps_serving(xihe_app: dict, client,
                                                                 tmp_path: Path) -> None:
    from gradio_client.exceptions import AppError

    (tmp_path / "notes.png").write_text("not an image\n")
    (tmp_path / "empty.png").write_bytes(b"")
    huge_png_header(tmp_path / "huge.png")
    expected = {"notes.png": "not an image that Pillow can read", "empty.png": "file is empty",
                "huge.png": "larger than the limit of 25000000 pixels"}
    for name, message in expected.items():
        with pytest.raises(AppError, match=message):
            classify(client, tmp_path / name)
    with pytest.raises(AppError, match="drawing is empty"):
        Image.new("RGBA", (280, 280)).save(tmp_path / "blank.png")
        from gradio_client import handle_file

        client.predict({"background": None, "layers": [],
                        "composite": handle_file(str(tmp_path / "blank.png"))}, "auto",
                       api_name="/classify_drawing")
    assert xihe_app["process"].poll() is None
    label, _ = classify(client, SEVEN)
    assert label["label"] == "7"


def small_png(source: Path, target: Path) -> None:
    """The screenshot with at most 256 colours: the same picture, a fraction of the bytes."""
    image = Image.open(source).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)


@contextlib.contextmanager
def browser_page(url: str, tmp_path: Path):
    """The system's headless Chromium on `url`, allowed to load nothing but the app itself;
    yields the page and the list of blocked URLs."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), "this test drives the system's Chromium, which is missing: " \
        "install it (Debian/Ubuntu: apt-get install chromium), as the README's Quick start says"
    blocked: list[str] = []

    def local_only(route) -> None:  # the page may use nothing but the app itself
        request_url = route.request.url
        if request_url.startswith(("data:", "blob:")) or urlparse(request_url).hostname == LOCAL:
            route.continue_()
        else:
            blocked.append(request_url)
            route.abort()

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with sync_playwright() as playwright:
        # A fresh profile: launch_persistent_context passes it as --user-data-dir.
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=flags,
            viewport={"width": 1100, "height": 760})
        try:
            browser.route("**/*", local_only)
            page = browser.pages[0] if browser.pages else browser.new_page()
            page.goto(url, wait_until="domcontentloaded", timeout=60_000)
            yield page, blocked
        finally:
            browser.close()


def upload_and_classify(page, image: Path):
    """Upload `image`, click Classify; return the prediction's locator."""
    from playwright.sync_api import expect

    page.locator("#upload-image input[type=file]").set_input_files(str(image))
    # The preview shows once the file has reached the server; a click before that
    # classifies no image (seen once in CI: "No image: upload an image ...").
    expect(page.locator("#upload-image img")).to_be_visible(timeout=30_000)
    page.locator("#classify-button").click()
    return page.locator("#prediction [data-testid='label-output-value']")


def test_real_browser_uploads_a_digit_and_reads_the_label(xihe_app: dict,
                                                          tmp_path: Path) -> None:
    from playwright.sync_api import expect

    raw = tmp_path / "screenshot.png"
    with browser_page(xihe_app["url"], tmp_path) as (page, blocked):
        prediction = upload_and_classify(page, SEVEN)
        expect(prediction).to_have_text("7", timeout=60_000)
        details = page.locator("#details textarea").input_value()
        assert details.startswith("28x28 image, not inverted"), details
        heat = page.locator("#gradcam img")  # the overlay beside the top-3 answer
        expect(heat).to_be_visible(timeout=30_000)
        assert heat.evaluate("img => img.complete && img.naturalWidth") == 280
        page.screenshot(path=str(raw), full_page=True)

        # Draw a "1" on the sketchpad with the mouse and classify the drawing.
        page.get_by_role("tab", name="Draw").click()
        canvas = page.locator("#sketchpad canvas").last
        expect(canvas).to_be_visible(timeout=10_000)
        box = canvas.bounding_box()
        x = box["x"] + box["width"] / 2
        page.mouse.move(x, box["y"] + box["height"] * 0.2)
        page.mouse.down()
        for step in range(1, 21):
            page.mouse.move(x, box["y"] + box["height"] * (0.2 + 0.03 * step))
        page.mouse.up()
        page.locator("#classify-drawing-button").click()
        expect(page.locator("#details textarea")).to_have_value(
            re.compile("inverted .light background., cropped and centred"), timeout=60_000)
        expect(prediction).to_have_text("1")
    small_png(raw, tmp_path / "xihe_app.png")
    size = (tmp_path / "xihe_app.png").stat().st_size
    assert size < 200_000, f"screenshot is {size} bytes"
    if os.environ.get("MS_RESNET_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "xihe_app.png", SCREENSHOT)
    assert not [u for u in blocked if "/gradio_api/" in u or "/file=" in u], blocked


def test_app_without_its_model_files_says_which_file_is_missing(tmp_path: Path) -> None:
    folder = tmp_path / "inference"
    shutil.copytree(INFERENCE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "MS_RESNET_MODEL"}
    result = subprocess.run([sys.executable, "app.py", "--host", LOCAL, "--port",
                             str(free_port())], check=False, cwd=folder, env=env,
                            capture_output=True,
                            text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 2  # as every ms_resnet command
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {folder / model_file_names()[0]}: model file not found"), last
    assert "config.json's model_path" in last


def _third_party_imports(path: Path) -> set[str]:
    """Top-level modules `path` imports beyond the standard library, parsed as Python 3.9."""
    tree = ast.parse(path.read_text(encoding="utf-8"), feature_version=(3, 9))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    return imported - set(sys.stdlib_module_names) - {"__future__"}


def test_app_py_keeps_to_python_3_9_and_needs_no_ms_resnet() -> None:
    assert _third_party_imports(INFERENCE / "app.py") == {"gradio", "mindspore", "numpy", "PIL",
                                                          "matplotlib", "cpu_isa"}
    # The app's oneDNN ISA rule is the package's module, as a real file (a link dangles once
    # the folder is copied or pushed alone); this keeps the copy from drifting.
    assert not (INFERENCE / "cpu_isa.py").is_symlink()
    source = ROOT / "ms_resnet" / "cpu_isa.py"
    assert (INFERENCE / "cpu_isa.py").read_bytes() == source.read_bytes(), \
        "inference/cpu_isa.py differs from ms_resnet/cpu_isa.py: cp ms_resnet/cpu_isa.py inference/"
    assert _third_party_imports(INFERENCE / "cpu_isa.py") == set()
    requirements = (INFERENCE / "requirements.txt").read_text(encoding="utf-8")
    import gradio

    assert f"gradio=={gradio.__version__}" in requirements.splitlines()  # tested = deployed


def test_xihe_pack_writes_the_model_files_and_the_app(mnist_run: dict, tmp_path: Path) -> None:
    out = tmp_path / "xihe"
    result = run_command("-m", "ms_resnet", "xihe-pack", "--ckpt_dir", str(mnist_run["dir"]),
                         "--out", str(out), "--repo", "alice/resnet20_mnist")
    assert result.returncode == 0, result.stderr
    model_files = ("best.mindir", "best.json", "best_explain.mindir")
    for name in model_files:
        assert (out / "model" / name).read_bytes() == (mnist_run["dir"] / name).read_bytes()
    for name in ("app.py", "cpu_isa.py", "requirements.txt"):
        assert not (out / "inference" / name).is_symlink()
        assert (out / "inference" / name).read_bytes() == (INFERENCE / name).read_bytes()
    config = json.loads((out / "inference" / "config.json").read_text(encoding="utf-8"))
    assert config == {"model_path": [f"alice/resnet20_mnist/{name}" for name in model_files]}
    shipped = sorted(p.name for p in EXAMPLES.glob("*.png"))
    assert sorted(p.name for p in (out / "inference" / "examples" / "mnist").iterdir()) == shipped
    assert "alice/resnet20_mnist" in result.stdout and "Next steps" in result.stdout


def test_xihe_pack_exports_a_checkpoint_that_has_no_mindir(mnist_run: dict,
                                                           tmp_path: Path) -> None:
    ckpt_dir = tmp_path / "run"
    ckpt_dir.mkdir()
    for name in ("best.ckpt", "config.yaml"):
        shutil.copyfile(mnist_run["dir"] / name, ckpt_dir / name)
    out = tmp_path / "xihe"
    result = run_command("-m", "ms_resnet", "xihe-pack", "--ckpt_dir", str(ckpt_dir), "--out",
                         str(out))
    assert result.returncode == 0, result.stderr
    assert "exporting" in result.stdout and "parity check" in result.stdout
    assert (ckpt_dir / "best.mindir").is_file()
    assert (out / "model" / "best.mindir").read_bytes() == (ckpt_dir / "best.mindir").read_bytes()
    config = json.loads((out / "inference" / "config.json").read_text(encoding="utf-8"))
    assert config["model_path"] == ["YOUR_XIHE_NAME/ms_resnet_resnet20_mnist/best.mindir",
                                    "YOUR_XIHE_NAME/ms_resnet_resnet20_mnist/best.json",
                                    "YOUR_XIHE_NAME/ms_resnet_resnet20_mnist/best_explain.mindir"]
    assert "placeholder" in result.stdout


def test_app_serves_an_export_without_explain_graph_without_heat_maps(mnist_run: dict,
                                                                      tmp_path: Path) -> None:
    """A model exported before explain graphs existed: no best_explain.mindir, and no
    `explain` entry in best.json. xihe-pack ships the two files; the app classifies as before
    and says that there is no heat map."""
    old = tmp_path / "old_run"
    old.mkdir()
    shutil.copyfile(mnist_run["dir"] / "best.mindir", old / "best.mindir")
    sidecar = json.loads((mnist_run["dir"] / "best.json").read_text(encoding="utf-8"))
    del sidecar["explain"]
    (old / "best.json").write_text(json.dumps(sidecar), encoding="utf-8")
    out = tmp_path / "xihe"
    result = run_command("-m", "ms_resnet", "xihe-pack", "--ckpt_dir", str(old), "--out",
                         str(out), "--repo", "alice/old")
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "inference" / "config.json").read_text(encoding="utf-8"))
    assert config == {"model_path": ["alice/old/best.mindir", "alice/old/best.json"]}
    code = (f"import sys; sys.path.insert(0, {str(out / 'inference')!r}); import app; "
            f"from PIL import Image; model = app.Model(app.Path({str(old / 'best.mindir')!r})); "
            f"label, details, heat = app.classify(model, Image.open({str(SEVEN)!r}), 'auto', "
            "False, 10**6); print(max(label, key=label.get), heat, details)")
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                            text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1].startswith("7 None 28x28 image"), result.stdout
    assert "no heat map (no explain graph)" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--ckpt_dir", "no/such/run"], "error: no/such/run: checkpoint folder not found"),
    (["--ckpt_dir", "."], "error: .: best.mindir and best.json not found, and no best.ckpt"),
    (["--ckpt_dir", ".", "--repo", "alice"], "error: --repo 'alice': expected OWNER/MODEL_REPO"),
    (["--out", "x"], "error: ms-resnet xihe-pack: the following arguments are required"),
])
def test_xihe_pack_errors_are_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    result = run_command("-m", "ms_resnet", "xihe-pack", *args, cwd=tmp_path,
                         env={"PYTHONPATH": str(ROOT)})
    assert result.returncode == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr


@pytest.fixture(scope="module")
def folder_app(folder_run: dict, tmp_path_factory: pytest.TempPathFactory):
    yield from serve_app(folder_run["dir"], tmp_path_factory)


def test_real_browser_shows_the_class_names_of_a_folder_trained_model(folder_app: dict,
                                                                       folder_run: dict,
                                                                       tmp_path: Path) -> None:
    """A model trained with --dataset folder (folders one/seven/zero of real MNIST digits)
    serves its folder names: the label the browser shows is a folder name."""
    from playwright.sync_api import expect

    seven = min((folder_run["data"] / "test" / "seven").iterdir())
    with browser_page(folder_app["url"], tmp_path) as (page, blocked):
        expect(page.get_by_text("fast_resnet8 · digits").first).to_be_visible(timeout=30_000)
        prediction = upload_and_classify(page, seven)
        expect(prediction).to_have_text("seven", timeout=60_000)
        names = page.locator("#prediction").inner_text()
        assert {"one", "zero"} <= set(names.split()), names
    assert not [u for u in blocked if "/gradio_api/" in u or "/file=" in u], blocked


def test_xihe_pack_of_a_folder_model_ships_one_example_per_class(folder_run: dict,
                                                                  tmp_path: Path) -> None:
    out = tmp_path / "xihe"
    result = run_command("-m", "ms_resnet", "xihe-pack", "--ckpt_dir", str(folder_run["dir"]),
                         "--out", str(out))
    assert result.returncode == 0, result.stderr
    sidecar = json.loads((out / "model" / "best.json").read_text(encoding="utf-8"))
    assert sidecar["classes"] == ["one", "seven", "zero"] and sidecar["title"] == "digits"
    examples = sorted(p.name.split("_")[0] for p in (out / "inference" / "examples" /
                                                     "folder").glob("*.png"))
    assert examples == ["one", "seven", "zero"]
    assert "3 example images" in result.stdout
