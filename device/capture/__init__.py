"""Sources of timestamped items: video-file frames and audio-file blocks (camera and microphone to come)."""
