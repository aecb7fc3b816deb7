"""The `affectbox` command line: one subcommand per job, one-line errors, meaningful exit codes.

Exit codes: 0 success, 2 bad input or configuration (the message names what was wrong),
130 interrupted. Unexpected internal errors keep their traceback, because they are bugs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from device import __version__
from device.cli_args import DEFAULT_CONFIG, bounded, daemon_config
from device.config import describe_defaults, load_config
from device.errors import AffectboxError
from device.notice import NOTICE_SHORT as NOTICE


def _progress_bar(description: str, quiet: bool, unit: str = "frame"
                  ) -> tuple[Callable[[float, float], None] | None, Callable[[], None]]:
    """A tqdm progress callback on stderr (shown on terminals only), and its closer."""
    if quiet:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(desc=description, unit=unit, file=sys.stderr, disable=None, dynamic_ncols=True)

    def update(done: float, expected: float) -> None:
        if expected and bar.total != expected:
            bar.total = round(max(expected, done), 1)
        if done - bar.n >= 1 or (expected and done >= expected):
            bar.n = round(done, 1)
            bar.refresh()

    return update, bar.close


def cmd_analyze(args: argparse.Namespace) -> int:
    from device.analyze import analyze_media

    config = load_config(args.config)
    if len(args.media) > 1 and (args.out is not None or args.audio is not None):
        raise AffectboxError("--out and --audio apply to one recording: analyse one file at a time with them")
    for media in args.media:
        update, close = _progress_bar(Path(media).name, args.quiet, unit="s")
        try:
            result = analyze_media(media, config, args.out, audio=args.audio, progress=update,
                                   overwrite=args.force, other_voices=args.other_voice)
        finally:
            close()
        for warning in result.warnings:
            print(f"affectbox: warning: {media}: {warning}", file=sys.stderr)
        summary = result.summary
        if args.json:
            print(json.dumps({"out_dir": str(result.out_dir), **summary}))
        else:
            seen = []
            if "face" in summary["coverage"]:
                seen.append(f"{result.frames} frames, face in {summary['coverage']['face']['share']:.0%}")
            if "speech" in summary["coverage"]:
                seen.append(f"{result.utterances} utterances, speech in {summary['coverage']['speech']['share']:.0%}")
            if summary["speakers"].get("attributed"):
                seen.append(f"{summary['speakers']['other_s']:.1f} s of other voices left out")
            print(f"{media}: {'; '.join(seen)}; {summary['windows_with_mood']}/{summary['windows']} windows "
                  f"with a mood, dominant {summary['dominant'] or '-'}")
            print(f"  report: {result.out_dir / 'report.html'}")
    if not args.json:
        print(NOTICE)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from device.metrics import format_report

    config = load_config(args.config)
    update, close = _progress_bar("eval", args.quiet or args.json, unit="file")
    try:
        if args.modality == "face":
            from device.evaluate import evaluate_faces

            report = evaluate_faces(Path(args.folder), config, progress=update)
        else:
            from device.evaluate_speech import evaluate_speech

            report = evaluate_speech(Path(args.folder), config, progress=update)
    finally:
        close()
    if args.json:
        print(json.dumps(report))
        return 0
    if args.modality == "face":
        print(f"{report['folder']}: model {report['model']} ({report['model_sha256'][:12]}), "
              f"flip average {'on' if report['flip_average'] else 'off'}, "
              f"{report['cpu_ms_per_face']:.3f} CPU ms per face")
    else:
        print(f"{report['folder']}: model {report['model']} ({report['model_sha256'][:12]}), "
              f"{report['audio_seconds']:.0f} s of audio, {report['cpu_ms_per_audio_second']:.3f} CPU ms "
              f"per second of audio")
        for corpus, figures in report["per_corpus"].items():
            print(f"  {corpus}: n = {figures['n']}, accuracy = {figures['accuracy']:.4f}, "
                  f"macro recall = {figures['macro_recall']:.4f}")
        print(f"  {report['note']}")
    print(format_report(report))
    print(format_calibration(report["calibration"]))
    return 0


def format_calibration(block: dict[str, Any]) -> str:
    """The `calibration` block of an eval report as two or three lines of text."""
    lines = [f"\ncalibration (ECE, 15 bins): shipped temperature {block['shipped_temperature']:.3f}: "
             f"{block['ece_shipped']:.4f}"]
    if block["cross_fitted"]:
        temps = ", ".join(f"{f['temperature']:.3f}" for f in block["per_fold"])
        lines.append(f"  cross-fitted ({block['folds']} folds, {block['split']}; fitted T {temps}): "
                     f"held-out ECE {block['ece_before']:.4f} (T=1) -> {block['ece_after']:.4f}, "
                     f"NLL {block['nll_before']:.4f} -> {block['nll_after']:.4f}")
    if block["note"]:
        lines.append(f"  {block['note']}")
    return "\n".join(lines)


def cmd_eval_av(args: argparse.Namespace) -> int:
    from device.evaluate_av import evaluate_av, format_av_report

    config = load_config(args.config)
    update, close = _progress_bar("eval av", args.quiet or args.json, unit="clip")
    try:
        report = evaluate_av(Path(args.folder), config, progress=update)
    finally:
        close()
    print(json.dumps(report) if args.json else format_av_report(report))
    return 0


def _add_eval_av(evaluate_sub: Any) -> None:
    av = evaluate_sub.add_parser(
        "av", help="face, voice and fused mood on video clips named as in RAVDESS (01-, 02- + 03-) or CREMA-D"
    )
    av.add_argument("folder", metavar="DIR")
    av.add_argument("--config", help="TOML config file")
    av.add_argument("--json", action="store_true", help="print one JSON object")
    av.add_argument("--quiet", action="store_true", help="no progress bar")
    av.set_defaults(func=cmd_eval_av)


def cmd_validate_config(args: argparse.Namespace) -> int:
    path = args.config or args.config_option or DEFAULT_CONFIG
    load_config(path)
    print(f"{path}: ok")
    return 0


def cmd_show_config(args: argparse.Namespace) -> int:
    if args.config:
        import dataclasses

        print(json.dumps(dataclasses.asdict(load_config(args.config)), indent=2))
    else:
        print(describe_defaults(), end="")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from device.atomic import check_output_path, output_stream
    from device.store import Store

    config = load_config(args.config)
    db = Path(args.db or config.store.path)
    if args.out is not None:  # refuse a bad target before reading anything
        check_output_path(args.out, overwrite=args.force, streams=True)
        if Path(args.out).resolve() == db.resolve():
            raise AffectboxError(f"{args.out}: is the local record itself; refusing to write the export over it")
    with Store.open(db, readonly=True) as store:
        if args.out is None:
            rows = store.export(patient_id=args.patient, session_id=args.session, fmt=args.format, out=sys.stdout)
        else:
            with output_stream(args.out, mode=0o600, overwrite=args.force) as handle:  # patient data: owner-only
                rows = store.export(patient_id=args.patient, session_id=args.session, fmt=args.format, out=handle)
    print(f"affectbox: exported {rows} windows{'' if args.out is None else f' to {args.out}'}. {NOTICE}",
          file=sys.stderr)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from device.capture.probe import check_media_path
    from device.daemon.service import run_daemon

    if args.audio and not args.replay:
        raise AffectboxError("--audio is only used with --replay VIDEO")
    for path in (args.replay, args.audio):
        if path:
            check_media_path(Path(path))
    config = daemon_config(args.config)
    if args.speed != 1.0 and not args.replay:
        raise AffectboxError("--speed is only used with --replay VIDEO")
    return run_daemon(config, replay_video=args.replay, replay_audio=args.audio, replay_loop=args.loop,
                      replay_speed=args.speed, patient=args.patient, verbose=args.verbose)


def cmd_session(args: argparse.Namespace) -> int:
    from device.daemon.control import send_request

    config = daemon_config(args.config)
    socket_path = args.socket or config.control.socket
    if args.action == "start":
        request: dict[str, Any] = {"command": "start", "patient_id": args.patient, "consent": args.consent}
        if args.max_minutes is not None:
            request["max_duration_s"] = args.max_minutes * 60.0
    else:
        request = {"command": args.action}
    result = send_request(socket_path, request)
    if args.json or args.action == "status":
        print(json.dumps(result, indent=None if args.json else 2))
    elif args.action == "start":
        print(f"session {result['session_id']} started for patient {result['patient_id']} "
              f"(stops by itself after {result['max_duration_s'] / 60:.0f} min)")
    elif result.get("stored") is False:  # the disk is full (or failing): say so, never a stored count
        print(f"session {result['session_id']} {result['state']} after {result.get('duration_s', 0):.0f} s with "
              f"{result.get('windows', 0)} windows; NOT stored yet: "
              f"{result.get('pending', 'storing is pending (see the daemon log)')}")
    else:
        print(f"session {result['session_id']} {result['state']} after {result.get('duration_s', 0):.0f} s, "
              f"{result.get('windows', 0)} windows stored")
    return 0


_minutes = bounded(float, 0.05, 720, "a number of minutes", " minutes")


def cmd_fetch_models(args: argparse.Namespace) -> int:
    from device.assets import fetch_all

    for line in fetch_all():
        print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="affectbox",
        description=f"On-device mood estimation for clinic sessions. {NOTICE}",
    )
    parser.add_argument("--version", action="version", version=f"affectbox {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    analyze = sub.add_parser("analyze", help="analyse recordings offline (video, video + audio, or audio)")
    analyze.add_argument("media", nargs="+", metavar="FILE", help="video (with or without audio track) or audio file")
    analyze.add_argument("--audio", help="a separate audio recording of the same session, starting with the video")
    analyze.add_argument("--out", help="output folder (default: ./<file name>.affectbox)")
    analyze.add_argument("--config", help="TOML config file (default: built-in defaults)")
    analyze.add_argument("--force", action="store_true", help="replace an earlier analysis in the output folder")
    analyze.add_argument("--json", action="store_true", help="print the summary as one JSON object per video")
    analyze.add_argument("--quiet", action="store_true", help="no progress bar")
    analyze.add_argument("--other-voice", action="append", metavar="ENROLL.wav", default=[],
                         help="a recording of someone other than the patient (10+ s of them alone); their "
                              "speech is counted, not analysed (repeatable)")
    analyze.set_defaults(func=cmd_analyze)

    evaluate = sub.add_parser("eval", help="measure a model on a labelled dataset folder")
    evaluate_sub = evaluate.add_subparsers(dest="modality", required=True, metavar="MODALITY")
    face = evaluate_sub.add_parser("face", help="facial expression on <class>/<image> folders (FER2013 layout)")
    face.add_argument("folder", metavar="DIR")
    face.add_argument("--config", help="TOML config file")
    face.add_argument("--json", action="store_true", help="print one JSON object")
    face.add_argument("--quiet", action="store_true", help="no progress bar")
    face.set_defaults(func=cmd_eval)
    speech = evaluate_sub.add_parser(
        "speech", help="speech emotion on audio files named as in RAVDESS, TESS, EMO-DB or CREMA-D"
    )
    speech.add_argument("folder", metavar="DIR")
    speech.add_argument("--config", help="TOML config file")
    speech.add_argument("--json", action="store_true", help="print one JSON object")
    speech.add_argument("--quiet", action="store_true", help="no progress bar")
    speech.set_defaults(func=cmd_eval)

    _add_eval_av(evaluate_sub)

    validate = sub.add_parser("validate-config", help="check a config file and exit")
    validate.add_argument("config", nargs="?", default=None)
    validate.add_argument("--config", dest="config_option", help="the config file (same as the positional one)")
    validate.set_defaults(func=cmd_validate_config)

    show = sub.add_parser("show-config", help="print every setting with its default (or a file's values)")
    show.add_argument("--config", help="show this file's effective values as JSON")
    show.set_defaults(func=cmd_show_config)

    export = sub.add_parser("export", help="export stored windows of one patient or one session (csv or jsonl)")
    which = export.add_mutually_exclusive_group(required=True)
    which.add_argument("--patient", help="opaque patient id: all of this patient's sessions")
    which.add_argument("--session", help="one session id")
    export.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    export.add_argument("--out", help="output file (a new regular file written atomically, mode 0600, or a FIFO or "
                                      "device written into); default: standard output")
    export.add_argument("--force", action="store_true", help="replace an existing --out file")
    export.add_argument("--db", help="the local record (default: store.path from the config)")
    export.add_argument("--config", help="TOML config file")
    export.set_defaults(func=cmd_export)

    fetch = sub.add_parser("fetch-models", help="fetch and verify third-party model files (set-up time)")
    fetch.set_defaults(func=cmd_fetch_models)

    run = sub.add_parser("run", help="run the appliance daemon (camera, microphone, sessions; systemd service)")
    run.add_argument("--config", help=f"TOML config file (default: {DEFAULT_CONFIG} if present, else defaults)")
    run.add_argument("--replay", metavar="VIDEO", help="feed the daemon from this file at real-time pace instead "
                                                       "of the camera (and its audio track instead of the mic)")
    run.add_argument("--audio", metavar="FILE", help="with --replay: a separate audio file for the microphone")
    run.add_argument("--loop", action="store_true", help="with --replay: start the files again at their end")
    run.add_argument("--speed", type=float, default=1.0, help="with --replay: play this many times faster than "
                                                              "real time (soak tests; session times shrink alike)")
    run.add_argument("--patient", help="start a session for this opaque patient id at once (demos, tests)")
    run.add_argument("--verbose", action="store_true", help="debug logging")
    run.set_defaults(func=cmd_run)

    session = sub.add_parser("session", help="start, stop or inspect the running daemon's session")
    session_sub = session.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("start", "start a session"), ("stop", "stop the running session"),
                         ("status", "print the daemon's status as JSON")):
        part = session_sub.add_parser(action, help=text)
        if action == "start":
            part.add_argument("--patient", required=True, help="the patient's opaque id (A-Z a-z 0-9 . _ -)")
            part.add_argument("--consent", action="store_true", help="the patient has consented to this session")
            part.add_argument("--max-minutes", type=_minutes, help="stop by itself after this many minutes "
                                                                   "(at most session.max_duration_minutes)")
        part.add_argument("--config", help=f"TOML config file (default: {DEFAULT_CONFIG} if present)")
        part.add_argument("--socket", help="the daemon's control socket (default: control.socket from the config)")
        part.add_argument("--json", action="store_true", help="print the answer as one JSON line")
        part.set_defaults(func=cmd_session)

    # `provision` and `selftest` (the installer's commands) live in device/cli_setup.py
    from device.cli_setup import add_setup_commands

    add_setup_commands(sub)
    from device.cli_voice import add_voice_commands

    add_voice_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except AffectboxError as exc:
        print(f"affectbox: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("affectbox: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
