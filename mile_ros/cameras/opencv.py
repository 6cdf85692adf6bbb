"""OpenCV VideoCapture on a device index such as "0", or a video file, which loops.

Frames are resized to width x height and converted to RGB when read.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mile_ros.cameras.base import CameraUnavailable


class OpenCVSource:
    """A camera device or a looping video file."""

    def __init__(self, device: str, width: int, height: int, rate_hz: float = 30.0):
        import cv2

        self.cv2, self.size = cv2, (int(width), int(height))
        self.is_file = not device.strip().isdigit()
        if self.is_file and not Path(device).is_file():
            raise CameraUnavailable(f"camera parameter 'device': video file {device!r} does not "
                                    f'exist (give a device index such as "0" or a video file)')
        self.device = device if self.is_file else int(device)
        self.cap = cv2.VideoCapture(self.device)
        if not self.cap.isOpened():
            where = ("video file" if self.is_file
                     else f"camera device {device} (/dev/video{device})")
            raise CameraUnavailable(f"camera parameter 'device'={device!r}: cannot open the "
                                    f"{where}; is it connected and readable?")
        if not self.is_file:
            self.cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            self.cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            self.cap.set(cv2.CAP_PROP_FPS, rate_hz)
        self.first = self.read()
        if self.first is None:
            self.cap.release()
            raise CameraUnavailable(f"camera parameter 'device'={device!r}: opened, but no frame "
                                    f"could be read (not a video, or the camera is busy)")

    def read(self) -> np.ndarray | None:
        """Return the next frame as uint8 RGB [height, width, 3].

        A video file starts over at its end.
        """
        ok, frame = self.cap.read()
        if not ok and self.is_file:
            self.cap.set(self.cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self.cap.read()
        if not ok or frame is None:
            return None
        if (frame.shape[1], frame.shape[0]) != self.size:
            frame = self.cv2.resize(frame, self.size, interpolation=self.cv2.INTER_AREA)
        return self.cv2.cvtColor(frame, self.cv2.COLOR_BGR2RGB)

    def reopen(self) -> bool:
        self.cap.release()
        self.cap = self.cv2.VideoCapture(self.device)
        return self.cap.isOpened()

    def close(self) -> None:
        self.cap.release()
