"""Lazy loaders for the native backends (the only imports of opuslib, sounddevice, espeak).

``import streamtts`` must work on a machine without libopus or PortAudio; the first use of a part
that needs one of them calls a loader here, which raises `BackendUnavailable` (an ImportError)
naming what to install.
"""

from __future__ import annotations

import functools
from types import ModuleType

from .errors import BackendUnavailable

__all__ = ["load_espeakng_loader", "load_opuslib", "load_sounddevice"]


@functools.cache
def load_opuslib() -> ModuleType:
    """Return the ``opuslib`` module, or raise `BackendUnavailable` saying what to install."""
    try:
        import opuslib
        import opuslib.api.decoder
        import opuslib.api.encoder
    except ModuleNotFoundError as exc:
        raise BackendUnavailable(
            "Opus support needs the Python package 'opuslib': pip install opuslib"
        ) from exc
    except Exception as exc:  # opuslib raises a bare Exception when libopus is missing
        raise BackendUnavailable(
            "Opus support needs the system library libopus "
            "(Debian/Ubuntu: apt-get install libopus0; macOS: brew install opus). "
            f"Loading it failed: {exc}"
        ) from exc
    module: ModuleType = opuslib
    return module


@functools.cache
def load_sounddevice() -> ModuleType:
    """Return the ``sounddevice`` module, or raise `BackendUnavailable` saying what to install."""
    try:
        import sounddevice
    except ModuleNotFoundError as exc:
        raise BackendUnavailable(
            "Audio output needs the Python package 'sounddevice': pip install sounddevice"
        ) from exc
    except OSError as exc:  # "PortAudio library not found"
        raise BackendUnavailable(
            "Audio output needs the system library PortAudio "
            "(Debian/Ubuntu: apt-get install libportaudio2; macOS: brew install portaudio). "
            f"Loading it failed: {exc}"
        ) from exc
    module: ModuleType = sounddevice
    return module


@functools.cache
def load_espeakng_loader() -> ModuleType:
    """Return the ``espeakng_loader`` module (bundled libespeak-ng and its data)."""
    try:
        import espeakng_loader
    except ModuleNotFoundError as exc:
        raise BackendUnavailable(
            "The offline engine needs the extra 'offline': pip install 'streamtts[offline]'"
        ) from exc
    module: ModuleType = espeakng_loader
    return module
