"""The streaming feature extractor: one openSMILE functionals vector per signal.

How audio reaches openSMILE, and why:

* Samples are fed as 16-bit PCM scaled like :class:`opensmile.Smile`
  (``x * 32768``, truncated), so features equal that reference and
  ``SMILExtract`` on the original 16-bit files. Float samples outside
  ``[-1, 1)`` are clipped (where :class:`opensmile.Smile` wraps around).
* Audio is **streamed** through a ring buffer of :data:`RING_SECONDS`. Fed the
  whole signal at once, the IS10 and emobase configs let every intermediate
  level grow to the full input (about 10 MB per second of 48 kHz audio: 6 GB
  for a 10-minute file); streamed, memory stays flat and the functionals of
  every built-in set are identical (the tests check this against
  :class:`opensmile.Smile`). Streaming is only safe when every level read by
  a whole-input component (``frameMode = full`` functionals …) is configured
  to grow: otherwise such a reader sees only the last frames a ring buffer
  still holds, or blocks it. Custom configs are therefore streamed only when
  a static check finds them safe, and a stream that stalls anyway is
  detected and the file is re-run with the whole input.
* openSMILE runs single-threaded inside one call; Ray provides parallelism.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import weakref
from pathlib import Path

import numpy as np
from opensmile.core.lib import OpenSMILE, OpenSmileException

from crossemo import storage
from crossemo.features.sets import DEFAULT_FEATURE_SET, resolve_feature_set
from crossemo.features.smileconfig import API_OPTION_INCLUDES, CONFIG_ROOT, SINK_COMPONENT, SOURCE_COMPONENT, FeatureError

RING_SECONDS: float = 8.0
"""Audio held by the streaming input's ring buffer (far above any analysis window)."""

CHUNK_SECONDS: float = 0.5
"""Audio written to openSMILE per call while streaming."""

STALL_SECONDS: float = 5.0
"""No room in the ring buffer for this long means the config needs the whole input."""


class FeatureExtractor:
    """Extract one functionals vector per signal with openSMILE.

    Picklable: nothing native is kept between calls (openSMILE needs a fresh
    instance per input anyway), and the temporary folder holding the adapted
    config is recreated lazily in whichever process uses the extractor.
    Credentials passed to read a config URI are not kept.

    Args:
        feature_set: a built-in name or a config location (see :func:`resolve_feature_set`).
        storage_options: filesystem options to read a config URI.

    Raises:
        FeatureError: if the feature set cannot be resolved.
    """

    def __init__(self, feature_set: str = DEFAULT_FEATURE_SET, *, storage_options: storage.StorageOptions | None = None) -> None:
        self._spec = resolve_feature_set(feature_set, storage_options=storage_options)
        self._names: list[str] | None = None
        self._stream = self._spec.streamable
        self._setup()

    def _setup(self) -> None:
        self._lock = threading.Lock()
        self._workdir: str | None = None
        self._finalizer: weakref.finalize | None = None

    def __getstate__(self) -> dict:
        return {"spec": self._spec, "names": self._names, "stream": self._stream}

    def __setstate__(self, state: dict) -> None:
        self._spec = state["spec"]
        self._names = state["names"]
        self._stream = state["stream"]
        self._setup()

    def __repr__(self) -> str:
        return f"FeatureExtractor({self._spec.id!r})"

    @property
    def feature_set_id(self) -> str:
        """The built-in name, or ``config-<first 16 hex of the adapted config's SHA-256>``."""
        return self._spec.id

    @property
    def level(self) -> str:
        """The openSMILE data memory level the features are read from."""
        return self._spec.level

    @property
    def names(self) -> list[str]:
        """Feature names exactly as openSMILE names them, in output order.

        Raises:
            FeatureError: if openSMILE rejects the config.
        """
        if self._names is None:
            self._names = self._read_names()
        return list(self._names)

    def extract(self, signal: np.ndarray, sampling_rate: int) -> np.ndarray:
        """Compute the functionals of one mono signal.

        Args:
            signal: 1-D float signal in ``[-1, 1)``.
            sampling_rate: sampling rate in Hz.

        Returns:
            ``float64`` vector of ``len(names)`` finite values.

        Raises:
            FeatureError: if the input is not a 1-D float signal, openSMILE
                fails or returns no single frame, or any feature is NaN or
                infinite.
        """
        signal = np.asarray(signal)
        if signal.ndim != 1 or not np.issubdtype(signal.dtype, np.floating):
            raise FeatureError(f"expected a 1-D float signal, got {signal.dtype} with shape {signal.shape}")
        if int(sampling_rate) <= 0:
            raise FeatureError(f"invalid sampling rate {sampling_rate}")
        if not np.isfinite(signal).all():
            raise FeatureError("signal contains NaN or infinite samples")
        names = self.names
        frames = None
        if self._stream:
            frames = self._run(signal, int(sampling_rate), streaming=True)
            if frames is None:
                # The config needs its whole input (e.g. functionals over a level
                # that cannot grow); remember that for the rest of this process.
                self._stream = False
        if frames is None:
            frames = self._run(signal, int(sampling_rate), streaming=False)
        if not frames:
            raise FeatureError(f"openSMILE produced no features ({signal.size / sampling_rate:.3f} s may be too short for this feature set)")
        matrix = np.vstack(frames)
        if matrix.shape[0] != 1:
            raise FeatureError(f"openSMILE produced {matrix.shape[0]} frames at level {self.level!r}; one functionals vector per utterance is needed")
        vector = matrix[0].astype(np.float64)
        if vector.size != len(names):
            raise FeatureError(f"openSMILE produced {vector.size} values for {len(names)} feature names")
        bad = np.flatnonzero(~np.isfinite(vector))
        if bad.size:
            raise FeatureError(f"{bad.size} of {vector.size} features are NaN or infinite (e.g. {names[bad[0]]})")
        return vector

    # -- openSMILE plumbing -------------------------------------------------

    def _prepare(self) -> str:
        """Create the temporary folder with the source include and the adapted config."""
        with self._lock:
            if self._workdir is None:
                workdir = tempfile.mkdtemp(prefix="crossemo-smile-")
                for streaming in (True, False):
                    Path(workdir, _source_file(streaming)).write_text(_source_include(streaming), encoding="ascii")
                Path(workdir, "sink.conf.inc").write_text(_SINK_INCLUDE, encoding="ascii")
                if self._spec.config_text is not None:
                    Path(workdir, "features.conf").write_text(self._spec.config_text, encoding="utf-8")
                self._finalizer = weakref.finalize(self, shutil.rmtree, workdir, True)
                self._workdir = workdir
            return self._workdir

    def _config_path(self, workdir: str) -> str:
        return self._spec.config_path or os.path.join(workdir, "features.conf")

    def _options(self, workdir: str, *, sampling_rate: int, streaming: bool) -> dict[str, object]:
        options: dict[str, object] = {name: str(CONFIG_ROOT / path) for name, path in API_OPTION_INCLUDES.items()}
        options.update(
            {
                "source": os.path.join(workdir, _source_file(streaming)),
                "sink": os.path.join(workdir, "sink.conf.inc"),
                "sinkLevel": self.level,
                "sampleRate": sampling_rate,
                "crossemoRingFrames": max(1, int(RING_SECONDS * sampling_rate)),
            }
        )
        return options

    def _read_names(self) -> list[str]:
        workdir = self._prepare()
        log_file = os.path.join(workdir, f"names-{threading.get_ident()}.log")
        smile = OpenSMILE()
        try:
            smile.initialize(self._config_path(workdir), self._options(workdir, sampling_rate=16000, streaming=False), loglevel=2, log_file=log_file)
            count = smile.external_sink_get_num_elements(SINK_COMPONENT)
            return [smile.external_sink_get_element_name(SINK_COMPONENT, index) for index in range(count)]
        except OpenSmileException as error:
            raise FeatureError(f"openSMILE rejects feature set {self.feature_set_id!r}: {_log_errors(log_file) or error}") from None
        finally:
            smile.free()

    def _run(self, signal: np.ndarray, sampling_rate: int, *, streaming: bool) -> list[np.ndarray] | None:
        """Run openSMILE once; ``None`` when streaming stalled (the config needs the whole input)."""
        workdir = self._prepare()
        frames: list[np.ndarray] = []
        smile = OpenSMILE()
        try:
            smile.initialize(self._config_path(workdir), self._options(workdir, sampling_rate=sampling_rate, streaming=streaming), loglevel=2)
            smile.external_sink_set_callback_ex(SINK_COMPONENT, lambda data, meta: frames.append(np.array(data, dtype=np.float32)))
            if not streaming:
                if not smile.external_audio_source_write_data(SOURCE_COMPONENT, _pcm16(signal)):
                    raise FeatureError("openSMILE did not accept the signal")
                smile.external_audio_source_set_eoi(SOURCE_COMPONENT)
                smile.run()
                return frames
            return frames if _stream(smile, signal, sampling_rate) else None
        except OpenSmileException as error:
            raise FeatureError(f"openSMILE failed: {error}") from None
        finally:
            smile.free()


def _stream(smile: OpenSMILE, signal: np.ndarray, sampling_rate: int) -> bool:
    """Feed ``signal`` chunk by chunk while openSMILE runs in a thread.

    Returns:
        ``False`` if the ring buffer stayed full for :data:`STALL_SECONDS`
        (openSMILE was aborted); ``True`` once the run has finished.

    Raises:
        OpenSmileException: if the run failed.
    """
    failures: list[BaseException] = []

    def run() -> None:
        try:
            smile.run()
        except BaseException as error:  # reported to the caller below
            failures.append(error)

    runner = threading.Thread(target=run, name="opensmile", daemon=True)
    runner.start()
    stalled = False
    try:
        position = _feed(smile, signal, sampling_rate, runner)
        stalled = position is None
        if stalled:
            smile.abort()
        elif runner.is_alive():
            smile.external_audio_source_set_eoi(SOURCE_COMPONENT)
    except BaseException:
        # Never free openSMILE under a running thread: stop it first.
        smile.abort()
        raise
    finally:
        runner.join()
    if failures and not stalled:
        raise failures[0]
    if not stalled and position < signal.size:
        raise OpenSmileException(-1, "openSMILE stopped before the end of the input")
    return not stalled


def _feed(smile: OpenSMILE, signal: np.ndarray, sampling_rate: int, runner: threading.Thread) -> int | None:
    """Write ``signal`` in chunks as the ring buffer frees up.

    Returns:
        the number of samples written, or ``None`` if the ring buffer stayed
        full for :data:`STALL_SECONDS`.
    """
    chunk = max(1, int(CHUNK_SECONDS * sampling_rate))
    position, pending, progress = 0, None, time.monotonic()
    while position < signal.size and runner.is_alive():
        if pending is None:
            pending = _pcm16(signal[position : position + chunk])
        if smile.external_audio_source_write_data(SOURCE_COMPONENT, pending):
            position, pending, progress = min(position + chunk, signal.size), None, time.monotonic()
        elif time.monotonic() - progress > STALL_SECONDS:
            return None
        else:
            time.sleep(0.0005)
    return position


def _pcm16(signal: np.ndarray) -> bytes:
    """16-bit PCM bytes scaled exactly as :class:`opensmile.Smile` scales them."""
    # opensmile.Smile multiplies by 32768 in the signal's own float type and
    # truncates; doing the same keeps features identical to the reference.
    scaled = signal * signal.dtype.type(32768)
    # Clipping only changes samples at or beyond full scale, which the
    # reference would wrap around to the opposite sign.
    np.clip(scaled, -32768, 32767, out=scaled)
    return scaled.astype(np.int16).tobytes()


def _source_file(streaming: bool) -> str:
    return "source-ring.conf.inc" if streaming else "source-whole.conf.inc"


def _source_include(streaming: bool) -> str:
    """Our external audio source: a ring buffer when streaming, a growing level otherwise."""
    buffer = (
        "writer.levelconf.isRb=1\nwriter.levelconf.growDyn=0\nwriter.levelconf.nT=\\cm[crossemoRingFrames{128000}:ring buffer size in samples]\n"
        if streaming
        else "writer.levelconf.isRb=0\nwriter.levelconf.growDyn=1\n"
    )
    return (
        "[componentInstances:cComponentManager]\n"
        f"instance[{SOURCE_COMPONENT}].type=cExternalAudioSource\n\n"
        f"[{SOURCE_COMPONENT}:cExternalAudioSource]\n"
        "writer.dmLevel=wave\n"
        f"{buffer}"
        "sampleRate=\\cm[sampleRate{16000}:sampling rate in Hz]\n"
        "nBits=16\n"
        "channels=1\n"
    )


_SINK_INCLUDE = (
    "[componentInstances:cComponentManager]\n"
    f"instance[{SINK_COMPONENT}].type=cExternalSink\n\n"
    f"[{SINK_COMPONENT}:cExternalSink]\n"
    "reader.dmLevel=\\cm[sinkLevel{func}:level to read the features from]\n"
    "blocksize=1\n"
)


def _log_errors(log_file: str) -> str:
    """The (ERR) lines of an openSMILE log, joined."""
    try:
        text = Path(log_file).read_text(errors="replace")
    except OSError:
        return ""
    errors = [line.split("(ERR)", 1)[1].strip() for line in text.splitlines() if "(ERR)" in line]
    return "; ".join(errors)
