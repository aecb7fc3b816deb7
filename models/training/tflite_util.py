"""Int8 TFLite helpers shared by both training recipes: full-int8 conversion, and the manifest's
file and tensor contract read back from the converted file."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def tensor_contract(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(input, output) dicts: shape, dtype, quantisation; the output is logits over LABELS."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]

    def describe(tensor: dict[str, Any]) -> dict[str, Any]:
        scale, zero = tensor["quantization"]
        return {"shape": [int(x) for x in tensor["shape"]], "dtype": np.dtype(tensor["dtype"]).name,
                "scale": float(scale), "zero_point": int(zero)}

    return describe(inp), {**describe(out), "kind": "logits", "labels": LABELS}


def convert_full_int8(model: Any, samples: Iterable[np.ndarray]) -> bytes:
    """Full-int8 TFLite (int8 input and output) of a Keras model; `samples` are real inputs, batch axis included."""
    import tensorflow as tf

    samples = list(samples)

    def representative():
        for x in samples:
            yield [np.asarray(x, dtype=np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def publish_file(source: Path, target: Path) -> dict[str, Any]:
    """Copy a trained file into models/ and return its manifest fields: file, sha256, size, input, output."""
    shutil.copyfile(source, target)
    inputs, outputs = tensor_contract(target)
    return {
        "file": target.name,
        "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
        "size_bytes": target.stat().st_size,
        "input": inputs,
        "output": outputs,
    }
