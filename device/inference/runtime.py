"""Load TFLite models with LiteRT (tflite-runtime as fallback), verified against their manifest.

Every model the appliance runs is described by a manifest entry (file, sha256, input contract).
`load_model` checks the file before building the interpreter, so a missing, truncated or swapped
file is a one-line `ModelError` naming the file and what was expected, never a traceback.
One interpreter per model, created once; `num_threads` comes from the config.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from device.errors import ModelError

MODELS_DIR = Path(__file__).resolve().parent.parent.parent / "models"


def _interpreter_class() -> tuple[type, str]:
    """LiteRT first (maintained, wheels for 3.11-3.13 on aarch64), tflite-runtime second."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter  # type: ignore[import-not-found]

        return Interpreter, "tflite-runtime"
    except ImportError:
        raise ModelError(
            "no TFLite runtime installed: install ai-edge-litert (or tflite-runtime)"
        ) from None


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence LiteRT's native start-up chatter ("INFO: Created TensorFlow Lite XNNPACK delegate").

    It is written by C++ straight to file descriptor 2, where it would break the CLI's promise
    of one-line errors and clutter the journal. Python-level errors still propagate normally.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def runtime_name() -> str:
    """Name of the TFLite runtime package in use."""
    return _interpreter_class()[1]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelSpec:
    """What a model file must be: its manifest entry."""

    name: str
    file: str
    sha256: str
    input_shape: tuple[int, ...]
    input_dtype: str
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> ModelSpec:
        try:
            return cls(
                name=manifest["name"],
                file=manifest["file"],
                sha256=manifest["sha256"],
                input_shape=tuple(manifest["input"]["shape"]),
                input_dtype=manifest["input"]["dtype"],
                extra=manifest,
            )
        except (KeyError, TypeError) as exc:
            raise ModelError(f"model manifest {manifest.get('name', '?')}: missing field {exc}") from None


def read_manifest(path: Path) -> dict[str, Any]:
    """Parse a JSON manifest file with a one-line error on failure."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path}: model manifest not found") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable model manifest ({exc})") from None


def resolve_models_dir(configured: str) -> Path:
    return Path(configured) if configured else MODELS_DIR


class LoadedModel:
    """A verified model and its single interpreter; `run` feeds one input and returns all outputs."""

    def __init__(self, spec: ModelSpec, path: Path, num_threads: int) -> None:
        interpreter_cls, self.runtime = _interpreter_class()
        self.spec = spec
        self.path = path
        try:
            with _quiet_native_stderr():
                self.interpreter = interpreter_cls(model_path=str(path), num_threads=num_threads)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{path}: LiteRT cannot load this model ({exc})") from None
        self.input = self.interpreter.get_input_details()[0]
        self.outputs = self.interpreter.get_output_details()
        shape = tuple(int(d) for d in self.input["shape"])
        dtype = np.dtype(self.input["dtype"]).name
        if shape != spec.input_shape or dtype != spec.input_dtype:
            raise ModelError(
                f"{path}: input is {dtype}{list(shape)}, expected {spec.input_dtype}{list(spec.input_shape)}"
            )

    @property
    def input_quantization(self) -> tuple[float, int]:
        scale, zero = self.input["quantization"]
        return float(scale), int(zero)

    def output_quantization(self, index: int = 0) -> tuple[float, int]:
        scale, zero = self.outputs[index]["quantization"]
        return float(scale), int(zero)

    def run(self, tensor: np.ndarray) -> list[np.ndarray]:
        self.interpreter.set_tensor(self.input["index"], tensor)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(d["index"]) for d in self.outputs]


def model_metadata(models: list[LoadedModel]) -> list[dict[str, Any]]:
    """Name, version, sha256 and runtime of each loaded model, as analyses and the daemon record them."""
    return [{
        "name": m.spec.name,
        "version": m.spec.extra.get("version"),
        "sha256": sha256_file(m.path),
        "runtime": m.runtime,
    } for m in models]


def verify_file(spec: ModelSpec, path: Path) -> None:
    """Raise ModelError unless `path` exists and has the manifest's sha256."""
    if not path.is_file():
        raise ModelError(
            f"{path}: model file {spec.name} missing (run ./setup.sh to fetch it; expected sha256 {spec.sha256[:12]}…)"
        )
    actual = sha256_file(path)
    if actual != spec.sha256:
        size = path.stat().st_size
        raise ModelError(
            f"{path}: wrong or damaged model file for {spec.name} ({size} bytes, sha256 {actual[:12]}…, "
            f"expected sha256 {spec.sha256[:12]}… and input {spec.input_dtype}{list(spec.input_shape)})"
        )


def load_model(spec: ModelSpec, models_dir: Path, num_threads: int = 1) -> LoadedModel:
    """Verify the file named by `spec` under `models_dir`, then build its interpreter."""
    path = models_dir / spec.file
    verify_file(spec, path)
    return LoadedModel(spec, path, num_threads)


def load_interpreter(path: Path, num_threads: int = 1) -> Any:
    """An unverified interpreter for a model outside our manifests (benchmark anchors only)."""
    interpreter_cls, _ = _interpreter_class()
    with _quiet_native_stderr():
        interpreter = interpreter_cls(model_path=str(path), num_threads=num_threads)
        interpreter.allocate_tensors()
    return interpreter
