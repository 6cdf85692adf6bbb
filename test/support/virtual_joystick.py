"""A joystick that SDL itself believes is plugged in, for tests and simulated people.

SDL (2.0.14+) can attach a *virtual* joystick: `SDL_JoystickAttachVirtual` adds a device that
pygame enumerates, opens and reads exactly like a USB controller, and whose axes and buttons are
set with `SDL_JoystickSetVirtualAxis/Button`. This drives the real pygame code path of the joystick
node without /dev/uinput. It uses the SDL2 library that pygame itself loaded (same process, same
SDL state), through ctypes.
"""
from __future__ import annotations

import ctypes
import glob
import os

SDL_INIT_JOYSTICK = 0x00000200
SDL_JOYSTICK_TYPE_UNKNOWN = 0   # generic: all axes start at 0 (a game controller's triggers at -1)
AXIS_MAX = 32767


class VirtualJoystickError(RuntimeError):
    pass


def sdl_library() -> ctypes.CDLL:
    """Return the SDL2 shared library inside the pygame wheel (already loaded by pygame)."""
    import pygame

    base = os.path.dirname(pygame.__file__)
    candidates = sorted(glob.glob(os.path.join(base, os.pardir, "pygame.libs", "libSDL2-2*.so*"))
                        + glob.glob(os.path.join(base, "libSDL2-2*.so*"))
                        + glob.glob(os.path.join(base, ".dylibs", "libSDL2*.dylib"))
                        + glob.glob(os.path.join(base, "SDL2.dll")))
    if not candidates:
        raise VirtualJoystickError(f"no SDL2 library found next to pygame in {base}")
    lib = ctypes.CDLL(os.path.realpath(candidates[0]))
    lib.SDL_JoystickAttachVirtual.argtypes = [ctypes.c_int] * 4
    lib.SDL_JoystickAttachVirtual.restype = ctypes.c_int
    lib.SDL_JoystickDetachVirtual.argtypes = [ctypes.c_int]
    lib.SDL_JoystickDetachVirtual.restype = ctypes.c_int
    lib.SDL_JoystickOpen.argtypes = [ctypes.c_int]
    lib.SDL_JoystickOpen.restype = ctypes.c_void_p
    lib.SDL_JoystickClose.argtypes = [ctypes.c_void_p]
    lib.SDL_JoystickInstanceID.argtypes = [ctypes.c_void_p]
    lib.SDL_JoystickInstanceID.restype = ctypes.c_int
    lib.SDL_JoystickGetDeviceInstanceID.argtypes = [ctypes.c_int]
    lib.SDL_JoystickGetDeviceInstanceID.restype = ctypes.c_int
    lib.SDL_NumJoysticks.restype = ctypes.c_int
    lib.SDL_JoystickSetVirtualAxis.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int16]
    lib.SDL_JoystickSetVirtualAxis.restype = ctypes.c_int
    lib.SDL_JoystickSetVirtualButton.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint8]
    lib.SDL_JoystickSetVirtualButton.restype = ctypes.c_int
    lib.SDL_JoystickSetVirtualHat.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint8]
    lib.SDL_JoystickSetVirtualHat.restype = ctypes.c_int
    lib.SDL_InitSubSystem.argtypes = [ctypes.c_uint32]
    lib.SDL_InitSubSystem.restype = ctypes.c_int
    lib.SDL_GetError.restype = ctypes.c_char_p
    return lib


class VirtualJoystick:
    """A virtual controller: `set_axis(i, -1..1)`, `set_button(i, pressed)`, `detach()`.

    Defaults to the PS3 hid-sony shape (6 axes, 17 buttons). Values reach pygame at its next
    event pump, as with real hardware. Usable as a context manager (detaches on exit).
    """

    def __init__(self, n_axes: int = 6, n_buttons: int = 17, n_hats: int = 0):
        import pygame

        pygame.joystick.init()
        self.lib = sdl_library()
        if self.lib.SDL_InitSubSystem(SDL_INIT_JOYSTICK) != 0:
            raise VirtualJoystickError(f"SDL joystick init failed: {self._error()}")
        self.n_axes, self.n_buttons, self.n_hats = n_axes, n_buttons, n_hats
        index = self.lib.SDL_JoystickAttachVirtual(SDL_JOYSTICK_TYPE_UNKNOWN, n_axes,
                                                   n_buttons, n_hats)
        if index < 0:
            raise VirtualJoystickError(f"SDL_JoystickAttachVirtual failed: {self._error()}")
        self.handle = self.lib.SDL_JoystickOpen(index)
        if not self.handle:
            self.lib.SDL_JoystickDetachVirtual(index)
            raise VirtualJoystickError(f"SDL_JoystickOpen({index}) failed: {self._error()}")
        self.instance_id = self.lib.SDL_JoystickInstanceID(self.handle)

    def _error(self) -> str:
        return (self.lib.SDL_GetError() or b"").decode(errors="replace")

    @property
    def attached(self) -> bool:
        return self.handle is not None

    def device_index(self) -> int:
        """Return the current SDL device index (indices shift as other devices come and go)."""
        for i in range(self.lib.SDL_NumJoysticks()):
            if self.lib.SDL_JoystickGetDeviceInstanceID(i) == self.instance_id:
                return i
        raise VirtualJoystickError("the virtual joystick is not attached")

    def _check(self, ok: int, what: str) -> None:
        if ok != 0:
            raise VirtualJoystickError(f"{what} failed: {self._error()}")

    def set_axis(self, axis: int, value: float) -> None:
        """Value in [-1, 1] (clamped), as pygame's get_axis() will read it back."""
        if not self.attached:
            raise VirtualJoystickError("the virtual joystick is detached")
        raw = int(round(max(-1.0, min(1.0, float(value))) * AXIS_MAX))
        self._check(self.lib.SDL_JoystickSetVirtualAxis(self.handle, axis, raw), f"axis {axis}")

    def set_button(self, button: int, pressed: bool) -> None:
        if not self.attached:
            raise VirtualJoystickError("the virtual joystick is detached")
        self._check(self.lib.SDL_JoystickSetVirtualButton(self.handle, button, int(bool(pressed))),
                    f"button {button}")

    def set_hat(self, hat: int, value: int) -> None:
        """SDL hat bit mask: 1 up, 2 right, 4 down, 8 left."""
        self._check(self.lib.SDL_JoystickSetVirtualHat(self.handle, hat, value), f"hat {hat}")

    def set(self, axes=None, buttons=None) -> None:
        """Set many at once: axes {index: value} or a list, buttons {index: bool} or a list."""
        for i, v in (axes.items() if isinstance(axes, dict) else enumerate(axes or ())):
            self.set_axis(i, v)
        for i, v in (buttons.items() if isinstance(buttons, dict) else enumerate(buttons or ())):
            self.set_button(i, v)

    def detach(self) -> None:
        """Unplug: SDL reports the device removed at the next event pump."""
        if not self.attached:
            return
        index = self.device_index()
        self.lib.SDL_JoystickClose(self.handle)
        self.handle = None
        self._check(self.lib.SDL_JoystickDetachVirtual(index), "SDL_JoystickDetachVirtual")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.detach()
