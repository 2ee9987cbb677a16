"""A ctypes driver of the espeak-ng speech synthesiser.

The shared library and its voice data ship inside the PyPI package
``espeakng-loader``; no system package and no download are needed. The
library is a process-wide singleton that keeps state between calls, so
calls within a process are serialised with a lock and byte-identical
output needs a fresh process (see ``sb_prune.data.synthesize``).

Authors
 * sb_prune developers
"""

import ctypes
import os
import threading

import numpy as np

INSTALL_HINT = "pip install espeakng-loader"

# Constants of espeak-ng's public header speak_lib.h.
AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
ESPEAK_CHARS_UTF8 = 1
PARAMETER_IDS = {"rate": 1, "volume": 2, "pitch": 3, "range": 4}
EE_OK = 0

_LOCK = threading.Lock()
_CALLBACK_TYPE = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


def find_espeak():
    """Locate the espeak-ng library and data shipped in ``espeakng-loader``.

    Only checks that the files exist: the library is not loaded, so a
    parent process may call this before it forks synthesis workers.

    Returns
    -------
    library_path : str
        Path of the shared library.
    data_path : str
        Path of the ``espeak-ng-data`` folder.

    Example
    -------
    >>> library_path, data_path = find_espeak()
    >>> os.path.isdir(data_path)
    True
    """
    try:
        import espeakng_loader
    except ImportError as error:
        raise ImportError(
            f"sb_prune.data needs the espeak-ng engine: {INSTALL_HINT}"
        ) from error
    library_path = espeakng_loader.get_library_path()
    if not os.path.isfile(library_path):
        raise OSError(
            f"espeak-ng library not found at {library_path}; "
            f"reinstall it with: {INSTALL_HINT}"
        )
    try:
        data_path = espeakng_loader.get_data_path()
    except RuntimeError as error:
        raise OSError(f"{error}; reinstall it with: {INSTALL_HINT}") from error
    return library_path, data_path


def list_variants(data_path):
    """List the voice variants (``+m1``, ``+Alex``...) of an espeak-ng data.

    espeak-ng silently falls back to the base voice when a variant does
    not exist, so variant names must be checked against this list.

    Arguments
    ---------
    data_path : str
        The ``espeak-ng-data`` folder.

    Returns
    -------
    list of str
        Sorted variant names, the files of ``voices/!v``.

    Example
    -------
    >>> variants = list_variants(find_espeak()[1])
    >>> "m3" in variants, "m3x" in variants
    (True, False)
    """
    folder = os.path.join(data_path, "voices", "!v")
    if not os.path.isdir(folder):
        raise OSError(
            f"no voice variants in {folder}; reinstall it with: {INSTALL_HINT}"
        )
    return sorted(os.listdir(folder))


def load_library(library_path):
    """Load the espeak-ng shared library and declare its C signatures.

    Arguments
    ---------
    library_path : str
        Path of ``libespeak-ng``.

    Returns
    -------
    ctypes.CDLL
        The library with argument types set.

    Example
    -------
    >>> load_library("/nonexistent/libespeak-ng.so")
    Traceback (most recent call last):
    ...
    OSError: cannot load the espeak-ng library /nonexistent/libespeak-ng.so...
    """
    try:
        lib = ctypes.CDLL(library_path)
    except OSError as error:
        raise OSError(
            f"cannot load the espeak-ng library {library_path} ({error}); "
            f"install it with: {INSTALL_HINT}"
        ) from error
    lib.espeak_Initialize.argtypes = [
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
    ]
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK_TYPE]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int] * 3
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    if not hasattr(lib, "espeak_ng_SetRandSeed"):
        raise OSError(
            f"{library_path} lacks espeak_ng_SetRandSeed (espeak-ng older "
            f"than 1.52), so its output is not reproducible; {INSTALL_HINT}"
        )
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed.restype = None
    return lib


class Espeak:
    """Text to 16-bit PCM with the espeak-ng C library.

    Arguments
    ---------
    library_path : str, optional
        Path of ``libespeak-ng`` (default: the one in ``espeakng-loader``).
    data_path : str, optional
        The ``espeak-ng-data`` folder (default: the one in
        ``espeakng-loader``).

    Example
    -------
    >>> engine = Espeak()
    >>> engine.sample_rate
    22050
    >>> audio = engine.synthesize("hello world", voice="en-us+m3", seed=1)
    >>> audio.dtype, audio.ndim, 0.3 < len(audio) / engine.sample_rate < 3
    (dtype('int16'), 1, True)
    """

    def __init__(self, library_path=None, data_path=None):
        if library_path is None or data_path is None:
            found_library, found_data = find_espeak()
            library_path = library_path or found_library
            data_path = data_path or found_data
        self.data_path = data_path
        self.variants = set(list_variants(data_path))
        self._chunks = []
        self._callback = _CALLBACK_TYPE(self._collect)
        self._lib = load_library(library_path)
        with _LOCK:
            self.sample_rate = self._lib.espeak_Initialize(
                AUDIO_OUTPUT_SYNCHRONOUS, 1000, data_path.encode(), 0
            )
        if self.sample_rate <= 0:
            raise OSError(
                f"espeak_Initialize failed with data {data_path}; "
                f"reinstall it with: {INSTALL_HINT}"
            )

    def _collect(self, wav, n_samples, events):
        if n_samples > 0:
            self._chunks.append(ctypes.string_at(wav, 2 * n_samples))
        return 0

    def _set_voice(self, voice):
        base, _, variant = voice.partition("+")
        if variant and variant not in self.variants:
            raise ValueError(
                f"voice variant {variant!r} of voice {voice!r} is not in "
                f"{os.path.join(self.data_path, 'voices', '!v')}"
            )
        if self._lib.espeak_SetVoiceByName(voice.encode()) != EE_OK:
            raise ValueError(f"espeak-ng has no voice {base!r} (voice)")

    def synthesize(
        self, text, voice="en-us", rate=175, pitch=50, pitch_range=50, seed=0
    ):
        """Synthesise one utterance.

        Arguments
        ---------
        text : str
            What to say; punctuation shapes the intonation.
        voice : str
            ``base`` or ``base+variant``, e.g. ``"en-gb-x-rp+f2"``.
        rate : int
            Speaking rate in words per minute (80-450).
        pitch : int
            Base pitch, 0-100 (50 is the voice's own).
        pitch_range : int
            Pitch range, 0-100 (0 is monotone).
        seed : int
            Seed of espeak-ng's internal randomness.

        Returns
        -------
        numpy.ndarray
            int16 samples at ``self.sample_rate``.

        Example
        -------
        >>> engine = Espeak()
        >>> fast = engine.synthesize("one two three", rate=300, seed=0)
        >>> slow = engine.synthesize("one two three", rate=120, seed=0)
        >>> len(fast) < len(slow)
        True
        """
        settings = {"rate": rate, "pitch": pitch, "range": pitch_range}
        data = text.encode("utf-8") + b"\0"
        with _LOCK:
            self._lib.espeak_SetSynthCallback(self._callback)
            self._set_voice(voice)
            for name, value in settings.items():
                status = self._lib.espeak_SetParameter(
                    PARAMETER_IDS[name], int(value), 0
                )
                if status != EE_OK:
                    raise ValueError(f"espeak-ng rejected {name}={value}")
            self._lib.espeak_ng_SetRandSeed(int(seed))
            self._chunks = []
            status = self._lib.espeak_Synth(
                data,
                len(data),
                0,
                POS_CHARACTER,
                0,
                ESPEAK_CHARS_UTF8,
                None,
                None,
            )
            self._lib.espeak_Synchronize()
            if status != EE_OK:
                raise RuntimeError(
                    f"espeak_Synth failed ({status}) on {text!r}"
                )
            pcm = b"".join(self._chunks)
        return np.frombuffer(pcm, dtype=np.int16).copy()
