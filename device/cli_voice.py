"""`affectbox voice enroll|list|delete`: the device's enrolled voices (device/voice, docs/PRIVACY.md).

Enrolling keeps a voiceprint (biometric data) on this device, so it needs an explicit yes: typed
at the prompt, or `--yes` when a script runs it. Only names and counts are ever printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from device.cli_args import DEFAULT_CONFIG, bounded, daemon_config
from device.errors import AffectboxError

CONFIRMATION = ("A voiceprint of {name} (a speaker embedding: biometric data) will be kept on this device, "
                "file mode 0600, until deleted with 'affectbox voice delete {name}'. It is never exported or "
                "sent to the hub. Their speech in sessions will be counted, not analysed.")


def _config(args: argparse.Namespace) -> Any:
    return daemon_config(args.config)


def _confirm(name: str, assume_yes: bool) -> None:
    if assume_yes:
        return
    print(CONFIRMATION.format(name=name), file=sys.stderr)
    if not sys.stdin.isatty():
        raise AffectboxError("enrolling a voice needs an explicit confirmation: answer the prompt on a terminal, "
                             "or pass --yes")
    answer = input(f"Enroll {name}? Type yes to confirm: ").strip().lower()
    if answer != "yes":
        raise AffectboxError("not enrolled: the confirmation was not given")


def _record(config: Any, seconds: float) -> Any:
    import numpy as np

    from device.capture.live import microphone_from_config
    from device.selftest import read_for

    backend = microphone_from_config(config.capture, config.speech.block_ms)
    if backend is None:
        raise AffectboxError("--record needs a microphone (capture.microphone is none); enroll from a file")
    try:
        backend.open()
    except Exception as exc:  # PortAudio errors carry no common type
        raise AffectboxError(f"cannot open the microphone: {' '.join(str(exc).split())}") from None
    print(f"recording {seconds:g} s: the one person to enroll talks now, alone", file=sys.stderr)
    try:
        samples, error = read_for(backend, seconds, max_samples=None, wall_limit_s=seconds + 10.0)
    finally:
        with contextlib.suppress(Exception):
            backend.close()
    if not samples:
        raise AffectboxError(f"no audio from the microphone in {seconds:g} s" + (f" ({error})" if error else ""))
    return np.concatenate([s.data[: s.valid if s.valid >= 0 else None] for s in samples])


def cmd_voice(args: argparse.Namespace) -> int:
    from device.voice.loading import enroll_and_save, voiceprints_dir
    from device.voice.voiceprints import VoiceprintStore, check_name

    config = _config(args)
    store = VoiceprintStore(voiceprints_dir(config))
    if args.action == "list":
        voices = [v.listing() for v in store.load()]
        for problem in store.problems:
            print(f"affectbox: warning: {problem}", file=sys.stderr)
        if args.json:
            print(json.dumps({"voices": voices}))
        elif not voices:
            print("no voices enrolled: every voice heard in a session is analysed as the patient's")
        else:
            for v in voices:
                print(f"{v['name']}\tenrolled {v['created_utc']}\t{v['speech_s']:.1f} s of speech")
        return 0
    check_name(args.name)
    if args.action == "delete":
        store.delete(args.name)
        print(f"deleted the voiceprint of {args.name}")
        return 0
    if (args.file is None) == (args.record is None):
        raise AffectboxError("voice enroll needs one source: a FILE or --record SECONDS")
    if args.file is not None:
        from device.capture.audio_file import read_audio
        from device.capture.probe import check_media_path

        check_media_path(Path(args.file))
        _confirm(args.name, args.yes)
        pcm, _ = read_audio(args.file)
        what = args.file
    else:
        _confirm(args.name, args.yes)
        pcm = _record(config, args.record)
        what = f"{args.record:g} s from the microphone"
    entry = enroll_and_save(config, args.name, pcm, what=what, replace=args.replace)
    print(f"enrolled {entry['name']}: {entry['speech_s']:.1f} s of speech in {entry['utterances']} utterances "
          f"(voiceprint kept on this device only)")
    return 0


def add_voice_commands(sub: Any) -> None:
    voice = sub.add_parser("voice", help="enroll, list or delete the voices (clinicians) whose speech is not the "
                                         "patient's")
    actions = voice.add_subparsers(dest="action", required=True, metavar="ACTION")
    enroll = actions.add_parser("enroll", help="enroll one person's voice from a recording or the microphone")
    enroll.add_argument("file", nargs="?", metavar="FILE", help="audio (or video) of the one person talking, 20-30 s")
    enroll.add_argument("--name", required=True, help="an opaque id for the voice (A-Z a-z 0-9 . _ -)")
    enroll.add_argument("--record", type=bounded(float, 5, 120, "a number of seconds", " s"), metavar="SECONDS",
                        help="record this many seconds from the configured microphone instead of a FILE")
    enroll.add_argument("--replace", action="store_true", help="replace an enrolled voice of the same name")
    enroll.add_argument("--yes", action="store_true", help="confirm keeping the voiceprint without a prompt")
    listing = actions.add_parser("list", help="list the enrolled voices (names and dates, never voiceprints)")
    listing.add_argument("--json", action="store_true", help="one JSON object")
    delete = actions.add_parser("delete", help="delete one enrolled voice")
    delete.add_argument("name", help="the voice's name")
    for part in (enroll, listing, delete):
        part.add_argument("--config", help=f"TOML config file (default: {DEFAULT_CONFIG} if present)")
        part.set_defaults(func=cmd_voice)
