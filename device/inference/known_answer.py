"""Known-answer pairs: does this machine's runtime still give the answers the model was published with?

A model file with the right sha256 can still answer wrongly: a miscompiled kernel, a broken
runtime wheel, an emulator with a faulty CPU model (QEMU 7.2's default `max` CPU made the face
model call every face "sad"; FIELD_NOTES.md). So each model's manifest carries a `known_answer`:
a fixed input and the output recorded when the model was published (`record`, called by
models/training/record_known_answers.py). `check` runs that input once and compares.

The input is generated, not stored: bytes of SHA-256 in counter mode over the manifest's `seed`
(the same on every platform, with no dependence on NumPy's random streams), taken as int8/uint8
values, or mapped to [-1, 1] for float inputs. Outputs are recorded whole when small (the int8
logits) and, when large, as evenly spaced samples plus the mean and mean absolute value of the
whole tensor. Quantized outputs within `tolerance` LSB (QUANTIZED_TOLERANCE_LSB), float outputs
within `tolerance` times the output's largest magnitude. Measured (tests/test_arm64.py, FIELD_NOTES):
LiteRT's XNNPACK kernels give the x86 answers bit for bit on an emulated Cortex-A72; LiteRT's other
int8 kernels (taken when XNNPACK cannot read the CPU's description, e.g. without /sys) differ by up
to 3 LSB on these inputs, a valid computation rounded differently; QEMU 7.2's `max` CPU model was
off by 115 LSB. The tolerance accepts the second and refuses the third; `check` says whether the
answer was exact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device.assets import THIRD_PARTY_MANIFEST
from device.errors import ModelError
from device.inference.runtime import LoadedModel, ModelSpec, load_model, read_manifest, sha256_file

FORMAT = 1
GENERATOR = "sha256-counter"
FULL_UP_TO = 64  # outputs with at most this many values are recorded whole
SAMPLES = 32  # else this many evenly spaced values (plus mean and mean |x|)
FLOAT_TOLERANCE = 1e-3  # relative to the output's largest magnitude
QUANTIZED_TOLERANCE_LSB = 8


def generated_bytes(seed: str, count: int) -> bytes:
    """`count` bytes of SHA-256(seed || counter), counter as 8 big-endian bytes from 0."""
    seed_bytes = seed.encode("utf-8")
    blocks = (count + 31) // 32
    return b"".join(hashlib.sha256(seed_bytes + k.to_bytes(8, "big")).digest() for k in range(blocks))[:count]


def generated_input(seed: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """The known-answer input for a model input of `shape` and `dtype` (int8, uint8 or float32)."""
    size = int(np.prod(shape))
    raw = np.frombuffer(generated_bytes(seed, size), dtype=np.uint8)
    if dtype == "int8":
        return raw.view(np.int8).reshape(shape).copy()
    if dtype == "uint8":
        return raw.reshape(shape).copy()
    if dtype == "float32":
        return ((raw.astype(np.float32) - np.float32(127.5)) / np.float32(127.5)).reshape(shape)
    raise ModelError(f"known answer: no input generator for dtype {dtype}")


def _positions(size: int) -> np.ndarray:
    return np.linspace(0, size - 1, SAMPLES).round().astype(np.int64)


def summarise(output: np.ndarray) -> dict[str, Any]:
    """What is recorded of one output tensor."""
    flat = output.reshape(-1)
    entry: dict[str, Any] = {"shape": [int(d) for d in output.shape], "dtype": output.dtype.name}
    quantized = np.issubdtype(output.dtype, np.integer)
    if flat.size > FULL_UP_TO:
        entry["sampled"] = SAMPLES
        flat_values = flat[_positions(flat.size)]
        entry["mean"] = float(f"{float(np.mean(flat, dtype=np.float64)):.7g}")
        entry["mean_abs"] = float(f"{float(np.mean(np.abs(flat.astype(np.float64)))):.7g}")
    else:
        flat_values = flat
    entry["values"] = ([int(v) for v in flat_values] if quantized
                       else [float(f"{float(v):.7g}") for v in flat_values])
    if not quantized:
        entry["max_abs"] = float(f"{float(np.max(np.abs(flat))) if flat.size else 0.0:.7g}")
    return entry


def record(model: LoadedModel | NumpyVoiceEncoder, seed: str) -> dict[str, Any]:
    """A manifest's `known_answer`: the model's outputs on the generated input, on this machine."""
    from device.inference.runtime import runtime_name

    tensor = generated_input(seed, model.spec.input_shape, model.spec.input_dtype)
    outputs = model.run(tensor)
    quantized = all(np.issubdtype(o.dtype, np.integer) for o in outputs)
    return {
        "format": FORMAT,
        "input": {"generator": GENERATOR, "seed": seed},
        "outputs": [summarise(o) for o in outputs],
        "tolerance": QUANTIZED_TOLERANCE_LSB if quantized else FLOAT_TOLERANCE,
        "recorded_with": f"{getattr(model, 'runtime', None) or runtime_name()} on {platform.machine()}",
    }


@dataclass(frozen=True)
class Answer:
    """The outcome for one model: `status` is pass, fail or missing; `detail` one line."""

    name: str
    status: str
    detail: str
    max_difference: float = 0.0


def _compare(expected: dict[str, Any], actual: np.ndarray, tolerance: float) -> tuple[float, int, int, str]:
    """(largest difference, values off, values compared, unit) for one output."""
    got = summarise(actual)
    if got["shape"] != expected.get("shape") or got["dtype"] != expected.get("dtype"):
        raise ValueError(f"output is {got['dtype']}{got['shape']}, recorded {expected.get('dtype')}"
                         f"{expected.get('shape')}")
    pairs = list(zip(got["values"], expected["values"], strict=True))
    for key in ("mean", "mean_abs"):
        if key in expected:
            pairs.append((got[key], expected[key]))
    if np.issubdtype(actual.dtype, np.integer):
        limit, unit = tolerance, "LSB"
    else:
        limit, unit = tolerance * max(float(expected.get("max_abs", 0.0)), 1e-12), ""
    differences = [abs(float(a) - float(b)) for a, b in pairs]
    return max(differences, default=0.0), sum(d > limit for d in differences), len(differences), unit


def check(model: LoadedModel | NumpyVoiceEncoder) -> Answer:
    """Run the manifest's known-answer input through `model` and compare with the recorded output."""
    name = model.spec.name
    pair = model.spec.extra.get("known_answer")
    if not isinstance(pair, dict):
        return Answer(name, "missing", f"{name}: no known answer in its manifest")
    try:
        if pair.get("format") != FORMAT or pair["input"]["generator"] != GENERATOR:
            raise ValueError(f"unknown known-answer format {pair.get('format')}/{pair['input'].get('generator')}")
        tensor = generated_input(str(pair["input"]["seed"]), model.spec.input_shape, model.spec.input_dtype)
        expected = pair["outputs"]
        tolerance = float(pair.get("tolerance", 0))
        outputs = model.run(tensor)
        if len(outputs) != len(expected):
            raise ValueError(f"{len(outputs)} outputs, recorded {len(expected)}")
        worst, off, compared = 0.0, 0, 0
        for index, (recorded, actual) in enumerate(zip(expected, outputs, strict=True)):
            try:
                difference, wrong, count, unit = _compare(recorded, actual, tolerance)
            except ValueError as exc:
                raise ValueError(f"output {index}: {exc}") from None
            worst, off, compared = max(worst, difference), off + wrong, compared + count
            if wrong:
                shown = f"{difference:g}{' ' + unit if unit else ''}"
                return Answer(name, "fail", f"{name}: wrong known answer: output {index} differs from the one "
                                            f"recorded at publishing ({pair.get('recorded_with', '?')}) at "
                                            f"{wrong} of {count} values, by up to {shown}: this runtime or CPU "
                                            "computes the model wrongly (a broken kernel or runtime, or an "
                                            "emulator's CPU model)", difference)
    except (KeyError, TypeError, ValueError) as exc:
        return Answer(name, "fail", f"{name}: unusable known answer in its manifest ({exc})")
    exact = "exact" if worst == 0 else f"within {worst:.3g}"
    return Answer(name, "pass", f"{name}: {compared} values {exact}", worst)


def own_manifests(models_dir: Path) -> list[Path]:
    """Our published models' manifests: every models/*.json naming a model file, third_party.json aside."""
    found = []
    for path in sorted(models_dir.glob("*.json")):
        if path.name == THIRD_PARTY_MANIFEST:
            continue
        data = read_manifest(path)
        if isinstance(data, dict) and "file" in data and "sha256" in data:
            found.append(path)
    return found


def manifest_entries(models_dir: Path) -> list[dict[str, Any]]:
    """Every model described in `models_dir`: our manifests, then third_party.json's entries."""
    entries = [read_manifest(path) for path in own_manifests(models_dir)]
    third_party = models_dir / THIRD_PARTY_MANIFEST
    if third_party.is_file():
        entries += [e for e in read_manifest(third_party).get("models", []) if isinstance(e, dict)]
    return entries


class NumpyVoiceEncoder:
    """The speaker encoder (a PyTorch checkpoint run in numpy, device/inference/voice_encoder.py)
    behind the two things `check` and `record` use of a LiteRT model: `spec` and `run`. Its input
    has a symbolic `partials` dimension; the known answer uses one partial."""

    runtime = "numpy"

    def __init__(self, spec: ModelSpec, models_dir: Path) -> None:
        from device.inference.voice_encoder import VoiceEncoder

        path = models_dir / spec.file
        if sha256_file(path) != spec.sha256:
            raise ModelError(f"{spec.name}: {path} does not match its manifest's sha256 (fetch it again)")
        self.spec = dataclasses.replace(spec, input_shape=tuple(d if isinstance(d, int) else 1
                                                                for d in spec.input_shape))
        self._encoder = VoiceEncoder.from_file(path)

    def run(self, tensor: np.ndarray) -> list[np.ndarray]:
        return [self._encoder.forward(tensor)]


def load_for_check(spec: ModelSpec, models_dir: Path, num_threads: int = 1) -> Any:
    """The model behind `spec` as `check` and `record` use it: LiteRT for .tflite, numpy for the
    speaker encoder's checkpoint."""
    if spec.file.endswith(".pt"):
        return NumpyVoiceEncoder(spec, models_dir)
    return load_model(spec, models_dir, num_threads)


def check_all(models: list[LoadedModel]) -> list[Answer]:
    """Each model's answer, in order."""
    return [check(model) for model in models]


def check_models_dir(models_dir: Path, num_threads: int = 1) -> list[Answer]:
    """The answer of every model described in `models_dir` whose file is there (generic over the
    manifests, so a model added to them is checked without code naming it); a file not fetched is
    `missing`. Each model is loaded (and its sha256 verified) for the check, then released."""
    answers = []
    for entry in manifest_entries(models_dir):
        spec = ModelSpec.from_manifest(entry)
        if not (models_dir / spec.file).is_file():
            answers.append(Answer(spec.name, "missing", f"{spec.name}: file {spec.file} not fetched"))
            continue
        answers.append(check(load_for_check(spec, models_dir, num_threads)))
    return answers


def require_known_answers(models_dir: Path, num_threads: int = 1) -> list[Answer]:
    """Raise ModelError (one line) on the first wrong answer; models without a pair pass through."""
    answers = check_models_dir(models_dir, num_threads)
    for answer in answers:
        if answer.status == "fail":
            raise ModelError(answer.detail)
    return answers
