"""Sources of timestamped items: camera and video-file frames (audio arrives with the speech issue)."""
