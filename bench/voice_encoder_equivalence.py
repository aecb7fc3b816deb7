"""Check the numpy voice encoder (device/inference/voice_encoder.py) against Resemblyzer itself.

Needs PyTorch, librosa and Resemblyzer, which the appliance never installs: run it once from a
scratch virtual environment outside the worktree, with the worktree on PYTHONPATH, e.g.

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install torch==2.13.0 librosa webrtcvad-wheels \
        && /tmp/ref/bin/pip install --no-deps resemblyzer==0.1.4
    PYTHONPATH=. /tmp/ref/bin/python bench/voice_encoder_equivalence.py [WAV ...]

With no WAV files it uses RAVDESS/TESS clips from /work/shared/datasets (benchmarks may read them).
Prints, per clip, the largest absolute difference of the mel spectrogram (relative), of the LSTM
output for identical input, and of the final embedding, and the cosine similarity of the two
embeddings; exits non-zero if any embedding differs by more than 1e-4 in cosine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from device.inference.runtime import MODELS_DIR
from device.inference.voice_encoder import VoiceEncoder, mel_spectrogram, normalize_volume

DATASETS = Path("/work/shared/datasets")


def read_pcm(path: Path) -> np.ndarray:
    import librosa  # the reference environment's decoder and resampler

    return librosa.load(str(path), sr=16000)[0].astype(np.float32)


def default_clips() -> list[Path]:
    ravdess = sorted(DATASETS.glob("ravdess/*/*.flac"))[:6:2]
    tess = sorted(DATASETS.glob("tess/*/*.flac"))[:4:2]
    return ravdess + tess


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wavs", nargs="*", type=Path)
    args = parser.parse_args()
    import librosa
    import torch
    from resemblyzer import VoiceEncoder as Reference
    from resemblyzer import audio as ref_audio

    weights = MODELS_DIR / "third_party" / "resemblyzer_pretrained.pt"
    ours = VoiceEncoder.from_file(weights)
    reference = Reference(device="cpu", verbose=False, weights_fpath=weights)
    print(f"torch {torch.__version__}, librosa {librosa.__version__}")
    worst = 0.0
    for clip in args.wavs or default_clips():
        pcm = normalize_volume(read_pcm(clip))
        mel_ref = ref_audio.wav_to_mel_spectrogram(pcm)
        mel_ours = mel_spectrogram(pcm)
        mel_diff = float(np.abs(mel_ref - mel_ours).max() / max(np.abs(mel_ref).max(), 1e-12))
        batch = mel_ref[None, :160] if len(mel_ref) >= 160 else np.pad(mel_ref, ((0, 160 - len(mel_ref)), (0, 0)))[None]
        with torch.no_grad():
            lstm_ref = reference(torch.from_numpy(np.ascontiguousarray(batch))).numpy()
        lstm_diff = float(np.abs(lstm_ref - ours.forward(batch)).max())
        emb_ref = reference.embed_utterance(pcm)
        emb_ours = ours.embed(pcm)
        cosine = float(np.dot(emb_ref, emb_ours))
        worst = max(worst, 1.0 - cosine)
        print(f"{clip.name}: {len(pcm) / 16000:.2f} s  mel max rel diff {mel_diff:.2e}  "
              f"network max abs diff {lstm_diff:.2e}  embedding max abs diff {np.abs(emb_ref - emb_ours).max():.2e}  "
              f"cosine {cosine:.7f}")
    print(f"worst 1 - cosine: {worst:.2e}")
    return 0 if worst < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
