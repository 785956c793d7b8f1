"""`ms-resnet xihe-pack`: gather what the XiHe platform (昇思大模型平台) needs to serve a trained
model with the Gradio app in `inference/`.

XiHe keeps weights out of project repositories: the exported model goes to a model repository,
and the project's `inference/config.json` names its files ("model_path"), which XiHe downloads
next to `inference/app.py` before running it. The command writes both halves:

    OUT/model/      best.mindir, best.json,          -> upload to the model repository
                    best_explain.mindir (Grad-CAM)
    OUT/inference/  app.py, cpu_isa.py,              -> the project's inference/ folder
                    requirements.txt,
                    config.json (filled in), examples/<dataset>/
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from ms_resnet.config import CommandParser
from ms_resnet.data import FOLDER
from ms_resnet.errors import UserError
from ms_resnet.files import NewFile, read_json, read_yaml, write_files, write_text

INFERENCE_DIR = Path(__file__).resolve().parents[1] / "inference"
# cpu_isa.py is a copy of the package's module (tests/test_xihe.py keeps the two identical).
APP_FILES = ("app.py", "cpu_isa.py", "requirements.txt")
MODEL_FILES = ("best.mindir", "best.json")
EXPLAIN_FILE = "best_explain.mindir"  # the heat maps' graph; exports before it lack it
PLACEHOLDER_OWNER = "YOUR_XIHE_NAME"
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="ms-resnet xihe-pack",
        description="Prepare a trained model for the XiHe platform: copy best.mindir + best.json "
                    "(exported from best.ckpt first if needed) for its model repository, and the "
                    "Gradio app (inference/) with a config.json naming those files.")
    parser.add_argument("--ckpt_dir", required=True,
                        help="training output folder, e.g. ckpt/mnist (best.mindir + best.json, "
                             "or best.ckpt + config.yaml)")
    parser.add_argument("--out", default="dist/xihe", help="output folder (default: dist/xihe)")
    parser.add_argument("--repo", metavar="OWNER/MODEL_REPO",
                        help="XiHe model repository that will hold the model files (default: a "
                             f"placeholder under {PLACEHOLDER_OWNER}/ to edit in config.json)")
    parser.add_argument("--config", help="YAML config for exporting best.ckpt "
                        "(default: config.yaml beside it)")
    return parser


def exported_model(ckpt_dir: Path, config_path: str | None = None) -> list[Path]:
    """best.mindir, best.json and best_explain.mindir in `ckpt_dir`, exported from best.ckpt when
    missing (the explain graph only when there is a checkpoint to export it from)."""
    if not ckpt_dir.is_dir():
        raise UserError(f"{ckpt_dir}: checkpoint folder not found (train first, e.g. "
                        f"python train.py --ckpt_dir {ckpt_dir})")
    mindir, sidecar = (ckpt_dir / name for name in MODEL_FILES)
    explain = ckpt_dir / EXPLAIN_FILE
    ckpt = ckpt_dir / "best.ckpt"
    if mindir.is_file() and sidecar.is_file() and (explain.is_file() or not ckpt.is_file()):
        return [mindir, sidecar] + ([explain] if explain.is_file() else [])
    if not ckpt.is_file():
        missing = " and ".join(p.name for p in (mindir, sidecar) if not p.is_file())
        raise UserError(f"{ckpt_dir}: {missing} not found, and no best.ckpt to export them from "
                        "(train first, or pass the folder of a finished run)")
    from ms_resnet.export import export_checkpoint

    print(f"{ckpt_dir} has no exported model with an explain graph yet: exporting {ckpt}")
    export_checkpoint(ckpt, config_path)
    return [mindir, sidecar] + ([explain] if explain.is_file() else [])


def folder_examples(ckpt_dir: Path, target: Path, per_class: int = 1,
                    max_classes: int = 10) -> list[Path]:
    """For a model trained on a folder of images: the first test image of each class (up to
    `max_classes`), as PNG files named after the class, if the training folder is still
    where config.yaml says; nothing otherwise (the app then shows no examples)."""
    from PIL import Image

    from ms_resnet.data.folder import scan_folder

    try:
        config = read_yaml(ckpt_dir / "config.yaml")
        layout = scan_folder(Path(config["data_dir"]))
    except (KeyError, TypeError, UserError):
        return []
    files = layout.eval_files or layout.train
    written = []
    for name in layout.classes[:max_classes]:
        folder = (layout.eval_dir or layout.root / "train") / name
        for source in [f for f in files if f.parent == folder][:per_class]:
            path = target / f"{name}_{source.stem}.png"

            def convert(tmp: Path, source: Path = source) -> None:
                with Image.open(source) as image:
                    image.save(tmp, format="PNG")

            write_files([NewFile(path, convert)])
            written.append(path)
    return written


def default_repo(sidecar: dict) -> str:
    name = "_".join(str(sidecar.get(k)) for k in ("model", "dataset") if sidecar.get(k))
    return f"{PLACEHOLDER_OWNER}/ms_resnet_{name or 'model'}"


def _copy(source: Path, target: Path) -> None:
    write_files([NewFile(target, lambda tmp: shutil.copyfile(source, tmp),
                         source.stat().st_size)])


def pack(ckpt_dir: Path, out: Path, repo: str | None = None,
         config_path: str | None = None) -> dict:
    """Write OUT/model and OUT/inference; return config.json's content."""
    if repo is not None and not _REPO.fullmatch(repo):
        raise UserError(f"--repo {repo!r}: expected OWNER/MODEL_REPO (letters, digits, '_', '-', "
                        "'.'), e.g. alice/resnet20_mnist")
    missing = [name for name in APP_FILES if not (INFERENCE_DIR / name).is_file()]
    if missing:
        raise UserError(f"{INFERENCE_DIR}: {', '.join(missing)} not found; run xihe-pack from a "
                        "clone of the ms_resnet repository (pip install -e .)")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    model_files = exported_model(ckpt_dir, config_path)
    sidecar = read_json(model_files[1])
    repo = repo or default_repo(sidecar)

    (out / "model" / EXPLAIN_FILE).unlink(missing_ok=True)  # an older pack's
    for source in model_files:
        _copy(source, out / "model" / source.name)
    app_dir = out / "inference"
    for name in APP_FILES:
        _copy(INFERENCE_DIR / name, app_dir / name)
    dataset = str(sidecar.get("dataset") or "")
    examples = INFERENCE_DIR / "examples" / dataset
    if dataset and examples.is_dir():
        shutil.rmtree(app_dir / "examples" / dataset, ignore_errors=True)
        for image in sorted(examples.glob("*.png")):
            _copy(image, app_dir / "examples" / dataset / image.name)
    elif dataset == FOLDER:
        shutil.rmtree(app_dir / "examples" / dataset, ignore_errors=True)
        folder_examples(ckpt_dir, app_dir / "examples" / dataset)
    config = {"model_path": [f"{repo}/{path.name}" for path in model_files]}
    write_text(app_dir / "config.json", json.dumps(config, indent=2) + "\n")
    return config


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    config = pack(Path(args.ckpt_dir), out, args.repo, args.config)
    repo = config["model_path"][0].rsplit("/", 1)[0]
    size = (out / "model" / MODEL_FILES[0]).stat().st_size / 1e6
    examples = sorted((out / "inference" / "examples").glob("*/*.png"))
    names = [entry.rsplit("/", 1)[-1] for entry in config["model_path"]]
    print(f"XiHe files written to {out}:\n"
          f"  {out / 'model'}/      {MODEL_FILES[0]} ({size:.1f} MB), {', '.join(names[1:])}"
          f"  -> the model repository {repo}\n"
          f"  {out / 'inference'}/  app.py, cpu_isa.py, requirements.txt, config.json, "
          f"{len(examples)} example images  -> the project's inference/ folder\n"
          f"config.json: {json.dumps(config)}")
    if not args.repo:
        print(f"note: {repo} is a placeholder: pass --repo OWNER/MODEL_REPO, or edit "
              f"{out / 'inference' / 'config.json'}")
    print(f"Next steps (details in docs/xihe.md):\n"
          f"  1. Try it here: python {out / 'inference' / 'app.py'} --model "
          f"{out / 'model' / MODEL_FILES[0]}  (then open http://127.0.0.1:7860)\n"
          f"  2. On XiHe, create the model repository {repo} and upload "
          f"{', '.join(names)} from {out / 'model'} to its root.\n"
          f"  3. Create a project with a Gradio inference and put the files of "
          f"{out / 'inference'} in its inference/ folder (git push or web upload).\n"
          f"  4. Start the project's inference: XiHe downloads the model files next to app.py, "
          f"runs pip install -r requirements.txt, then python3 app.py (port 7860).")
