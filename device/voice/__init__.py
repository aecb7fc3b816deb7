"""Whose voice is it: speaker attribution of utterances (`patient` or `other`) by voice enrollment.

- `voiceprints.py`: the enrolled voices on this device (one 0600 file each; never exported or sent);
- `enrollment.py`: enrollment audio to a voiceprint, with the checks that refuse bad audio;
- `attribution.py`: an utterance's embedding against the enrolled voices.
The embedding model is `device.inference.voice_encoder` (Resemblyzer's GE2E encoder, numpy).
"""
