"""Record each model's known-answer pair (input seed and expected output) into its manifest.

    .venv/bin/python models/training/record_known_answers.py            # every model
    .venv/bin/python models/training/record_known_answers.py --check    # compare only, exit 1 if wrong

Part of publishing a model: publish_face.py and publish_speech.py call `record_manifest` on the
manifest they have just written; run it by hand for a third-party model added to
models/third_party.json (after `affectbox fetch-models`). The input is generated from a seed naming
the model and its file's sha256 (device/inference/known_answer.py), so a new file gets a new pair.
Our own manifests are rewritten as publish_*.py writes them (JSON, indent 2); in third_party.json
only the entry's one `known_answer` line is added or replaced, leaving the rest of the file as is.
Needs only numpy and ai-edge-litert (the device venv has both).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from device.assets import THIRD_PARTY_MANIFEST  # noqa: E402
from device.inference import known_answer  # noqa: E402
from device.inference.known_answer import own_manifests  # noqa: E402
from device.inference.runtime import ModelSpec, read_manifest  # noqa: E402

MODELS = REPO / "models"


def seed_for(manifest: dict[str, Any]) -> str:
    return f"affectbox known answer/{manifest['name']}/{manifest['sha256']}"


def _loaded(manifest: dict[str, Any], models_dir: Path) -> Any:
    return known_answer.load_for_check(ModelSpec.from_manifest(manifest), models_dir)


def record_manifest(path: Path) -> dict[str, Any]:
    """Record the pair of the model described by the manifest file `path` (one of ours); returns it."""
    manifest = read_manifest(path)
    manifest["known_answer"] = known_answer.record(_loaded(manifest, path.parent), seed_for(manifest))
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest["known_answer"]


def set_third_party_pair(text: str, name: str, pair: dict[str, Any]) -> str:
    """third_party.json's text with entry `name`'s `known_answer` line added (after its sha256) or replaced."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.strip().startswith(f'"name": "{name}"')), None)
    if start is None:
        raise SystemExit(f"{THIRD_PARTY_MANIFEST}: no entry named {name}")
    sha_line = next(i for i in range(start, len(lines)) if lines[i].strip().startswith('"sha256":'))
    indent = lines[sha_line][: len(lines[sha_line]) - len(lines[sha_line].lstrip())]
    new_line = f'{indent}"known_answer": {json.dumps(pair, separators=(", ", ": "))},\n'
    if lines[sha_line + 1].strip().startswith('"known_answer":'):
        lines[sha_line + 1] = new_line
    else:
        lines.insert(sha_line + 1, new_line)
    result = "".join(lines)
    parsed = json.loads(result)  # the edit must leave valid JSON with exactly this pair in
    entry = next(m for m in parsed["models"] if m["name"] == name)
    assert entry["known_answer"] == pair, name
    return result


def record_third_party(models_dir: Path, names: list[str] | None = None) -> list[str]:
    """Record the pairs of the fetched third-party models (all, or `names`); returns the names done."""
    path = models_dir / THIRD_PARTY_MANIFEST
    text = path.read_text(encoding="utf-8")
    done = []
    for entry in json.loads(text)["models"]:
        if names and entry["name"] not in names:
            continue
        pair = known_answer.record(_loaded(entry, models_dir), seed_for(entry))
        text = set_third_party_pair(text, entry["name"], pair)
        done.append(entry["name"])
    path.write_text(text, encoding="utf-8")
    return done


def check_everything(models_dir: Path) -> int:
    """Compare every model with its recorded pair; 1 when any is wrong or missing."""
    status = 0
    for entry in known_answer.manifest_entries(models_dir):
        answer = known_answer.check(_loaded(entry, models_dir))
        print(f"{answer.status}: {answer.detail}")
        status |= answer.status != "pass"
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=MODELS)
    parser.add_argument("--model", action="append", help="record only this model (name; repeatable)")
    parser.add_argument("--check", action="store_true", help="compare with the recorded pairs, change nothing")
    args = parser.parse_args()
    if args.check:
        return check_everything(args.models)
    for path in own_manifests(args.models):
        name = read_manifest(path)["name"]
        if not args.model or name in args.model:
            record_manifest(path)
            print(f"recorded {name} in {path.name}")
    for name in record_third_party(args.models, args.model):
        print(f"recorded {name} in {THIRD_PARTY_MANIFEST}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
