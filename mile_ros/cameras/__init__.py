"""Camera sources: OpenCV (a device or a video file) and the simulated scene's render."""
