"""The input/output contract of an int8 TFLite file as the manifests record it (read from the interpreter)."""

from __future__ import annotations

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
