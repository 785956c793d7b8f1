"""`ms-resnet download`: fetch a dataset's upstream files, check their md5, unpack archives."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from ms_resnet.data.prepare import local_files, safe_extract
from ms_resnet.data.registry import DatasetInfo, RemoteFile
from ms_resnet.errors import DataError


def file_md5(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, target: Path, timeout: float) -> str | None:
    """Stream `url` to `target` with a progress bar (written to a .part file, then renamed);
    return the server's X-Linked-ETag (Hugging Face: the file's SHA-256), if any."""
    part = target.with_name(target.name + ".part")
    request = urllib.request.Request(url, headers={"User-Agent": "ms_resnet"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(part, "wb") as out:
            etag = response.headers.get("X-Linked-ETag")
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name) as bar:
                for block in iter(lambda: response.read(1 << 16), b""):
                    out.write(block)
                    bar.update(len(block))
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, target)
    return etag


def download_file(remote: RemoteFile, data_dir: Path, timeout: float = 60.0) -> Path:
    """Download one file, trying each mirror; a file whose md5 is wrong is deleted, never used."""
    target = data_dir / remote.name
    errors = []
    for url in remote.urls:
        try:
            fetch(url, target, timeout)
        except (urllib.error.URLError, OSError) as exc:
            errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
            continue
        actual = file_md5(target)
        if actual == remote.md5:
            return target
        target.unlink()
        errors.append(f"{url}: md5 {actual} != expected {remote.md5} (file deleted)")
    raise DataError(f"could not download {remote.name}: " + "; ".join(errors))


def download(info: DatasetInfo, data_dir: Path, timeout: float = 60.0) -> list[Path]:
    """Fetch every missing upstream file of `info` into `data_dir` and unpack archives there."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fetched = []
    for remote, present in zip(info.files, (p for _, p in local_files(info, data_dir))):
        if present:
            print(f"{remote.name}: already present in {data_dir}")
            continue
        path = download_file(remote, data_dir, timeout)
        if path.name.endswith((".tar.gz", ".tgz", ".tar")):
            safe_extract(path, data_dir)
        print(f"{remote.name}: downloaded, md5 {remote.md5} verified")
        fetched.append(path)
    return fetched
