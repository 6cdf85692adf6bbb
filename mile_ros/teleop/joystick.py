"""A PS3 controller read through pygame (SDL): axes with the deadzone applied, and buttons.

Axes are SDL's raw joystick axes in [-1, 1] (stick up and stick left are negative; ROS's joy_node
negates them, so set the arbiter's axis_sign accordingly if you use that driver instead), with the
`deadzone` applied (zero inside, rescaled outside); hats follow as (x, y) axis pairs. Buttons are
in the driver's order (Linux hid-sony: cross circle triangle square L1 R1 L2 R2 select start PS
L3 R3 up down left right — the arbiter's `button_layout`).

A missing controller at start-up is an error naming `device_index`. A disconnect is reported by
`poll()` (the joystick node then stops the Joy stream, so the arbiter's Joy watchdog holds the
arm); reading resumes when the controller is back.
"""
from __future__ import annotations

import os

from mile_ros.params import ConfigError
from mile_ros.teleop.arbiter import apply_deadzone


class JoystickUnavailable(ConfigError):
    """No controller at the configured device_index."""


class JoystickReader:
    """ROS-free pygame side: open the device, follow unplug/replug, read axes and buttons."""

    def __init__(self, device_index: int = 0, deadzone: float = 0.0):
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")      # no window is needed
        os.environ.setdefault("SDL_JOYSTICK_ALLOW_BACKGROUND_EVENTS", "1")
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        import pygame

        if not 0.0 <= deadzone < 1.0:
            raise ConfigError(f"joystick parameter 'deadzone' must be in [0, 1), got {deadzone}")
        if device_index < 0:
            raise ConfigError(f"joystick parameter 'device_index' must be >= 0, "
                              f"got {device_index}")
        self.pg, self.device_index, self.deadzone = pygame, device_index, deadzone
        pygame.display.init()                                   # the event pump needs it
        pygame.joystick.init()
        pygame.event.pump()
        self.joystick = None
        if not self._open():
            names = [pygame.joystick.Joystick(i).get_name()
                     for i in range(pygame.joystick.get_count())]
            raise JoystickUnavailable(
                f"no joystick at device_index={device_index}: SDL sees {len(names)} "
                f"joystick(s) {names}. Connect the PS3 controller (USB, or pair it over "
                f"Bluetooth), check read access to /dev/input/event* and js*, or set the joystick "
                f"parameter device_index.")

    @property
    def connected(self) -> bool:
        return self.joystick is not None

    @property
    def name(self) -> str:
        return self.joystick.get_name() if self.joystick else ""

    def _open(self) -> bool:
        if self.pg.joystick.get_count() <= self.device_index:
            return False
        self.joystick = self.pg.joystick.Joystick(self.device_index)
        self.joystick.init()
        return True

    def poll(self) -> tuple[str | None, tuple[list[float], list[int]] | None]:
        """(event, state): event "disconnected"/"reconnected"/None; state None while unplugged."""
        pg, event = self.pg, None
        for e in pg.event.get():              # pumps SDL; axis/button events are read as state
            if (e.type == pg.JOYDEVICEREMOVED and self.joystick is not None
                    and e.instance_id == self.joystick.get_instance_id()):
                self.joystick.quit()
                self.joystick, event = None, "disconnected"
            elif e.type == pg.JOYDEVICEADDED and self.joystick is None and self._open():
                event = "reconnected"
        if self.joystick is None:
            return event, None
        j, dz = self.joystick, self.deadzone
        axes = [apply_deadzone(max(-1.0, min(1.0, j.get_axis(i))), dz)
                for i in range(j.get_numaxes())]
        for h in range(j.get_numhats()):
            axes += [float(v) for v in j.get_hat(h)]
        buttons = [int(j.get_button(i)) for i in range(j.get_numbuttons())]
        return event, (axes, buttons)

    def close(self) -> None:
        if self.joystick is not None:
            self.joystick.quit()
            self.joystick = None
