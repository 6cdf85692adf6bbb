"""Camera sources behind one contract (`read()`, `close()`).

OpenCV devices and files, the simulated scene.
"""
from mile_ros.cameras.base import SOURCES, CameraUnavailable, check_params
from mile_ros.cameras.opencv import OpenCVSource
from mile_ros.cameras.sim import SimSource

__all__ = ["SOURCES", "CameraUnavailable", "check_params", "OpenCVSource", "SimSource"]
