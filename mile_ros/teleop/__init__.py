"""Teleoperation.

The PS3 joystick reader, the Joy map and the takeover arbiter's state machine (pure).
"""
