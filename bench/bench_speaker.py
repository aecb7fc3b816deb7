"""Speaker attribution on real voices: verification EER, two-actor dialogues, cost.

    .venv/bin/python bench/bench_speaker.py [--datasets /work/shared/datasets] [--pairs 24] [--json-out FILE]

The voice encoder (Resemblyzer's GE2E, numpy port): its wheel does not name its training data;
Real-Time-Voice-Cloning, whose encoder it is interchangeable with, trains on LibriSpeech and
VoxCeleb 1 and 2. Neither holds RAVDESS or TESS, so every speaker here is unseen.

1. Verification: each RAVDESS actor (18) and TESS speaker (2) is enrolled as the device does it
   (`enroll_pcm`: VAD, pieces, checks) from 8 of their files joined with short pauses (about
   25 s); each of their other files, cut by the VAD as in a session and embedded with the
   device's `max_partials`, is scored against every enrollment. Equal error rate and the
   threshold at the EER; also the miss and false-accept rates at the configured threshold.
2. Dialogues: pairs of RAVDESS actors (male-male, female-female, mixed): the "patient" speaks
   files of one emotion, the enrolled "clinician" neutral/calm files (`--clinician-style calm`,
   6 to enroll, 6 in the dialogue) or files of any emotion (`any`, 8 and 8), in alternating turns
   with 0.4-1.2 s pauses; speech levelled to -26 dBFS, room noise at -56 dBFS. The clinician is
   enrolled from files not in the dialogue. The dialogue runs through the device's `SpeechAnalyzer` (VAD, attribution,
   emotion model). Per utterance, its speech time is split between the two by overlap with the
   turns. Reported: share of the clinician's speech excluded (target >= 90 %), share of the
   patient's kept (target >= 95 %), and speech-emotion accuracy on what is analysed as the
   patient's: per utterance (label == the patient's emotion) and per dialogue (quality-weighted
   mean, as a window does), with and without attribution.
3. Cost: CPU ms per utterance of the attribution (one interpreter thread, process pinned to one
   core), from the dialogue runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from device.capture.audio_file import read_audio
from device.config import Config
from device.evaluate_speech import parse_speech_name
from device.inference.speech import SpeechAnalyzer
from device.labels import LABELS
from device.voice.attribution import OTHER, SpeakerAttributor
from device.voice.enrollment import blocks_of, enroll_pcm, speech_utterances
from device.voice.loading import load_encoder
from device.voice.voiceprints import VoiceprintError

SR = 16000
ENROLL_FILES = 8


def speakers(root: Path, rng: np.random.Generator) -> dict[str, list[Path]]:
    found = {}
    for actor in sorted((root / "ravdess").glob("Actor_*")):
        found[f"ravdess-{actor.name[-2:]}"] = sorted(actor.glob("*.flac"))
    for who in ("OAF", "YAF"):
        files = sorted((root / "tess").glob(f"{who}_*/*.flac"))
        if files:
            found[f"tess-{who}"] = [files[i] for i in sorted(rng.choice(len(files), 60, replace=False))]
    return found


SPEECH_DBFS = -26.0  # speech level of a clinic microphone (the 16 kHz corpus copies sit near -48 dBFS)
NOISE_DBFS = -56.0  # room noise: 30 dB below the speech


def levelled(path: Path) -> np.ndarray:
    """A file's samples scaled so that its speech (frames within 30 dB of its loudest) sits at SPEECH_DBFS."""
    pcm = read_audio(path)[0].astype(np.float32)
    frames = pcm[: len(pcm) // 480 * 480].reshape(-1, 480)
    power = np.mean(frames ** 2, axis=1) + 1e-9
    speech = power[power > power.max() / 1000]
    gain = 10 ** (SPEECH_DBFS / 20) * 32768 / np.sqrt(np.mean(speech))
    return np.clip(pcm * gain, -32768, 32767).astype(np.int16)


def joined(paths: list[Path], rng: np.random.Generator) -> np.ndarray:
    parts = []
    for p in paths:
        parts += [levelled(p), np.zeros(int(rng.uniform(0.3, 0.8) * SR), np.int16)]
    return np.concatenate(parts)


def eer(targets: np.ndarray, nontargets: np.ndarray) -> tuple[float, float]:
    """(equal error rate, threshold there) over all observed score thresholds."""
    best = (1.0, 0.0, 0.0)
    for th in np.unique(np.concatenate([targets, nontargets])):
        miss = float(np.mean(targets < th))
        fa = float(np.mean(nontargets >= th))
        if abs(miss - fa) < best[0]:
            best = (abs(miss - fa), (miss + fa) / 2, float(th))
    return best[1], best[2]


def verification(config: Config, found: dict[str, list[Path]], rng: np.random.Generator) -> dict:
    encoder = load_encoder(config)
    enrolled, tests = {}, {}
    for name, files in found.items():
        order = list(rng.permutation(len(files)))
        enroll = [files[i] for i in order[:ENROLL_FILES]]
        enrolled[name] = enroll_pcm(joined(enroll, rng), encoder, config.speech, what=name, threshold=0.0,
                                    min_speech_s=5.0).embedding
        embeddings = []
        for i in order[ENROLL_FILES:]:
            pcm = levelled(files[i])
            for u in speech_utterances(blocks_of(pcm, config.speech.block_ms), config.speech):
                embeddings.append(encoder.embed(u.pcm, config.voice.max_partials))
        tests[name] = np.stack(embeddings)
    names = sorted(enrolled)
    matrix = np.stack([enrolled[n] for n in names])
    targets, nontargets = [], []
    per_corpus: dict[str, dict[str, list[float]]] = {}
    for i, name in enumerate(names):
        scores = tests[name] @ matrix.T
        corpus = per_corpus.setdefault(name.split("-")[0], {"t": [], "n": []})
        targets += scores[:, i].tolist()
        corpus["t"] += scores[:, i].tolist()
        others = np.delete(scores, i, axis=1).ravel().tolist()
        nontargets += others
        corpus["n"] += others
    t, n = np.array(targets), np.array(nontargets)
    rate, threshold = eer(t, n)
    th = config.voice.threshold
    out = {"speakers": len(names), "target_trials": len(t), "nontarget_trials": len(n),
           "eer": round(rate, 4), "eer_threshold": round(threshold, 4),
           "configured_threshold": th, "miss_at_configured": round(float(np.mean(t < th)), 4),
           "false_accept_at_configured": round(float(np.mean(n >= th)), 4)}
    for corpus, s in per_corpus.items():
        r, thr = eer(np.array(s["t"]), np.array(s["n"]))
        out[f"eer_{corpus}"] = round(r, 4)
        out[f"eer_threshold_{corpus}"] = round(thr, 4)
    return out


def dialogue(patient_files: list[Path], clinician_files: list[Path], rng: np.random.Generator
             ) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    parts, turns, t = [], [], 0.5
    parts.append(np.zeros(int(0.5 * SR), np.int16))
    for p, c in zip(patient_files, clinician_files, strict=True):
        for path, who in ((p, "patient"), (c, "clinician")):
            pcm = levelled(path)
            turns.append((t, t + len(pcm) / SR, who))
            gap = np.zeros(int(rng.uniform(0.4, 1.2) * SR), np.int16)
            parts += [pcm, gap]
            t += (len(pcm) + len(gap)) / SR
    mix = np.concatenate(parts).astype(np.float32)
    mix += rng.normal(0, 32768 * 10 ** (NOISE_DBFS / 20), len(mix)).astype(np.float32)
    return np.clip(mix, -32768, 32767).astype(np.int16), turns


def overlap(a0: float, a1: float, turns: list[tuple[float, float, str]], who: str) -> float:
    return sum(max(0.0, min(a1, e) - max(a0, s)) for s, e, w in turns if w == who)


def run_dialogues(config: Config, found: dict[str, list[Path]], pairs: int, rng: np.random.Generator,
                  clinician_style: str = "calm") -> dict:
    encoder = load_encoder(config)
    base = SpeechAnalyzer.from_config(config)
    actors = [n for n in sorted(found) if n.startswith("ravdess")]
    male = [a for a in actors if int(a[-2:]) % 2 == 1]
    female = [a for a in actors if int(a[-2:]) % 2 == 0]
    groups = {"male-male": list(itertools.permutations(male, 2)),
              "female-female": list(itertools.permutations(female, 2)),
              "mixed": [(a, b) for a in actors for b in actors if (a in male) != (b in male)]}
    per_group = max(1, pairs // 3)
    rows = []
    refused: list[str] = []
    attribution_cpu = []
    for group, candidates in groups.items():
        for k in rng.choice(len(candidates), per_group, replace=False):
            patient, clinician = candidates[k]
            items = {p: parse_speech_name(p.name) for p in found[patient]}
            emotions = sorted({it.label for it in items.values() if it is not None})
            emotion = emotions[int(rng.integers(len(emotions)))]
            p_files = [p for p, it in items.items() if it is not None and it.label == emotion]
            p_files = [p_files[i] for i in rng.permutation(len(p_files))[:8]]
            c_all = [found[clinician][i] for i in rng.permutation(len(found[clinician]))]
            if clinician_style == "calm":  # RAVDESS neutral and calm: 12 files per actor, 6 to enroll, 6 to talk
                c_all = [p for p in c_all if p.name.split("-")[2] in ("01", "02")]
                c_enroll, c_dialogue = c_all[:6], c_all[6:12]
                p_files = p_files[:len(c_dialogue)]
            else:
                c_enroll, c_dialogue = c_all[:ENROLL_FILES], c_all[ENROLL_FILES:ENROLL_FILES + len(p_files)]
            try:
                voice = enroll_pcm(joined(c_enroll, rng), encoder, config.speech, what=clinician,
                                   threshold=config.voice.threshold, min_speech_s=5.0).embedding
            except VoiceprintError as exc:  # the device would refuse this enrollment: counted, pair skipped
                refused.append(str(exc))
                continue
            mix, turns = dialogue(p_files, c_dialogue, rng)
            result = {"group": group, "patient": patient, "clinician": clinician, "emotion": emotion}
            for mode in ("attributed", "unattributed"):
                attributor = SpeakerAttributor(encoder, {"clinician": voice}, config.voice.threshold,
                                               config.voice.max_partials, config.voice.adaptive,
                                               config.voice.margin) if mode == "attributed" else None
                analyzer = SpeechAnalyzer(base.classifier, config.speech, attributor)
                observations = []
                for block in blocks_of(mix, config.speech.block_ms):
                    observations += analyzer.process(block)
                observations += analyzer.flush()
                fed = [o for o in observations if o.features.get("speaker") != OTHER and o.probs is not None]
                kept_p = sum(overlap(o.features["start"], o.features["end"], turns, "patient") for o in fed)
                kept_c = sum(overlap(o.features["start"], o.features["end"], turns, "clinician") for o in fed)
                all_p = sum(overlap(o.features["start"], o.features["end"], turns, "patient") for o in observations)
                all_c = sum(overlap(o.features["start"], o.features["end"], turns, "clinician") for o in observations)
                correct = [LABELS[int(np.argmax(o.probs))] == emotion for o in fed]
                weights = np.array([max(o.quality, 1e-3) for o in fed])
                mean = (np.stack([o.probs for o in fed]) * weights[:, None]).sum(axis=0) if fed else None
                result[mode] = {
                    "patient_s": round(all_p, 2), "clinician_s": round(all_c, 2),
                    "patient_kept": round(kept_p / all_p, 4) if all_p else None,
                    "clinician_excluded": round(1 - kept_c / all_c, 4) if all_c else None,
                    "utterance_accuracy": round(float(np.mean(correct)), 4) if correct else None,
                    "dialogue_correct": None if mean is None else LABELS[int(np.argmax(mean))] == emotion,
                }
            rows.append(result)
    # attribution cost per utterance, isolated from the emotion model: the dialogue utterances again
    attributor = SpeakerAttributor(encoder, {"x": np.ones(256, np.float32) / 16}, config.voice.threshold,
                                   config.voice.max_partials)
    mix, _ = dialogue(found[actors[0]][:8], found[actors[1]][:8], rng)
    for u in speech_utterances(blocks_of(mix, config.speech.block_ms), config.speech):
        start = time.process_time()
        attributor.attribute(u.pcm)
        attribution_cpu.append(1000 * (time.process_time() - start))

    def share(mode: str, key: str, subset: list[dict]) -> float | None:
        num = sum(r[mode][key] * r[mode]["patient_s" if key == "patient_kept" else "clinician_s"]
                  for r in subset if r[mode][key] is not None)
        den = sum(r[mode]["patient_s" if key == "patient_kept" else "clinician_s"] for r in subset
                  if r[mode][key] is not None)
        return round(num / den, 4) if den else None

    summary: dict = {"dialogues": len(rows), "enrollments_refused": refused}
    for group in ("all", *groups):
        subset = rows if group == "all" else [r for r in rows if r["group"] == group]
        summary[group] = {
            "dialogues": len(subset),
            "clinician_excluded": share("attributed", "clinician_excluded", subset),
            "patient_kept": share("attributed", "patient_kept", subset),
            "worst_clinician_excluded": min((r["attributed"]["clinician_excluded"] for r in subset
                                             if r["attributed"]["clinician_excluded"] is not None), default=None),
            "worst_patient_kept": min((r["attributed"]["patient_kept"] for r in subset
                                       if r["attributed"]["patient_kept"] is not None), default=None),
        }
        for mode in ("attributed", "unattributed"):
            accs = [r[mode]["utterance_accuracy"] for r in subset if r[mode]["utterance_accuracy"] is not None]
            summary[group][f"utterance_accuracy_{mode}"] = round(float(np.mean(accs)), 4) if accs else None
            summary[group][f"dialogue_accuracy_{mode}"] = round(
                float(np.mean([bool(r[mode]["dialogue_correct"]) for r in subset])), 4) if subset else None
    cpu = np.array(attribution_cpu)
    summary["attribution_cpu_ms_per_utterance"] = {"mean": round(float(cpu.mean()), 2),
                                                   "median": round(float(np.median(cpu)), 2),
                                                   "p90": round(float(np.percentile(cpu, 90)), 2),
                                                   "utterances": len(cpu)}
    summary["rows"] = rows
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=Path("/work/shared/datasets"))
    parser.add_argument("--pairs", type=int, default=24)
    parser.add_argument("--skip-dialogues", action="store_true")
    parser.add_argument("--skip-verification", action="store_true")
    parser.add_argument("--clinician-style", choices=("calm", "any"), default="calm",
                        help="the clinician speaks RAVDESS neutral/calm files (default) or any emotion")
    parser.add_argument("--max-partials", type=int, help="override [voice] max_partials")
    parser.add_argument("--threshold", type=float, help="override [voice] threshold")
    parser.add_argument("--adaptive", type=lambda v: v == "on", help="override [voice] adaptive (on/off)")
    parser.add_argument("--margin", type=float, help="override [voice] margin")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    config = Config()
    overrides = {k: v for k, v in (("max_partials", args.max_partials), ("threshold", args.threshold),
                                   ("adaptive", args.adaptive), ("margin", args.margin)) if v is not None}
    config = dataclasses.replace(config, voice=dataclasses.replace(config.voice, **overrides))
    rng = np.random.default_rng(15)
    found = speakers(args.datasets, rng)
    if not found:
        print(f"{args.datasets}: no RAVDESS or TESS speakers found", file=sys.stderr)
        return 2
    started = time.time()
    result = {"machine": platform.machine(), "python": platform.python_version(),
              "command": "python " + " ".join(sys.argv), "threshold": config.voice.threshold,
              "max_partials": config.voice.max_partials}
    if not args.skip_verification:
        result["verification"] = verification(config, found, rng)
        print(json.dumps(result["verification"], indent=2))
    if not args.skip_dialogues:
        result["dialogues"] = run_dialogues(config, found, args.pairs, rng, args.clinician_style)
        result["dialogues"]["clinician_style"] = args.clinician_style
        print(json.dumps({k: v for k, v in result["dialogues"].items() if k != "rows"}, indent=2))
    result["wall_s"] = round(time.time() - started, 1)
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
