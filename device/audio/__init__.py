"""Audio for the speech analyzer: file reading, resampling to 16 kHz, and the speech model's features."""
