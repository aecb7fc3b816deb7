"""Raw model outputs on given inputs, for comparing two machines (tests/test_arm64.py).

    python tests/model_probe.py INPUTS.npz OUTPUTS.npz [--config CONFIG]

INPUTS.npz holds, per model name, a stack of ready-made input tensors (each of the model's input
shape and dtype); OUTPUTS.npz gets `<name>/<output index>` stacks of what the model returned, and
`<name>/known_answer` the known-answer check's outcome. Loads the models as the appliance does
(device.selftest.load_models) from the installed affectbox, so it runs in the appliance's venv,
which has no test packages.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from device.config import Config, load_config
from device.inference.known_answer import check
from device.selftest import load_models


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("inputs", type=Path)
    parser.add_argument("outputs", type=Path)
    parser.add_argument("--config", type=Path)
    args = parser.parse_args()
    config = load_config(args.config) if args.config else Config()
    models = {model.spec.name: model for model in load_models(config)}
    results: dict[str, np.ndarray] = {}
    with np.load(args.inputs) as inputs:
        for name in inputs.files:
            model = models[name]
            runs = [model.run(tensor) for tensor in inputs[name]]
            for index in range(len(runs[0])):
                results[f"{name}/{index}"] = np.concatenate([run[index] for run in runs])
    for name, model in models.items():
        answer = check(model)
        results[f"{name}/known_answer"] = np.array([answer.status, answer.detail])
    np.savez(args.outputs, **results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
