"""Lazy loaders for the native backends (the only imports of opuslib, sounddevice, espeak).

``import streamtts`` must work on a machine without libopus or PortAudio; the first use of a part
that needs one of them calls a loader here, which raises `BackendUnavailable` (an ImportError)
naming what to install.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Callable
from types import ModuleType

from .errors import BackendUnavailable

__all__ = ["load_espeakng_loader", "load_opuslib", "load_sounddevice", "release_free_heap"]


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


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None (another C library, or not found)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_heap() -> None:
    """Give the C heap's free memory back to the system (glibc ``malloc_trim``; else no-op).

    glibc keeps freed heap memory for reuse, and only the free space at the top of its heap
    goes back to the system by itself; ``malloc_trim`` also releases the free pages inside it.
    The player calls this when its output goes idle, so a speaker that has been talking holds
    only its live memory between utterances; it takes ~0.1 ms. (The heap's steady climb of a
    long run came from the socket reads' transient buffers and is fixed at its source:
    `streamtts.engines._net`.)
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
