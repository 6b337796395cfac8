"""openSMILE functionals per utterance: built-in feature sets and the user's own configs.

A feature set is named by a short name or given as an openSMILE config file:

=========== ======================= ========
name        openSMILE set           features
=========== ======================= ========
``is10``    IS10_paraling_compat    1582
``egemaps`` eGeMAPSv02              88
``compare`` ComParE_2016            6373
``emobase`` emobase                 988
=========== ======================= ========

``is10`` is the default: the study's emobase2010 set is the INTERSPEECH 2010
paralinguistic set. A **custom config** (local path or URI) may be written for
openSMILE's Python API (input through ``\\{\\cm[source{?}:…]}``, output
through ``\\{\\cm[sink{?}:…]}``) or for ``SMILExtract`` (a ``cWaveSource``
and file sinks such as ``cArffSink``/``cCsvSink``). :func:`adapt_config` turns
either into one self-contained text: includes are inlined (relative to the
including file's folder, as openSMILE resolves them), the wave source is
replaced by the Python API's external audio source and the file sinks by its
external sink, reading the level the file sinks read. So a user's own
``emobase2010.conf`` gives the functionals ``SMILExtract`` computes with it
(for mono input; see :mod:`crossemo.audio` for stereo). The adapted text's
SHA-256 names the set in the feature cache.

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

import hashlib
import os
import posixpath
import re
import shutil
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import opensmile
from opensmile.core.lib import OpenSMILE, OpenSmileException

from crossemo import storage

FEATURE_SETS: dict[str, opensmile.FeatureSet] = {
    "is10": opensmile.FeatureSet.IS10,
    "egemaps": opensmile.FeatureSet.eGeMAPSv02,
    "compare": opensmile.FeatureSet.ComParE_2016,
    "emobase": opensmile.FeatureSet.emobase,
}
"""Built-in feature sets by crossemo name."""

DEFAULT_FEATURE_SET: str = "is10"

FUNCTIONALS_LEVEL: str = "func"
"""The data memory level that holds the functionals in openSMILE's own configs."""

RING_SECONDS: float = 8.0
"""Audio held by the streaming input's ring buffer (far above any analysis window)."""

CHUNK_SECONDS: float = 0.5
"""Audio written to openSMILE per call while streaming."""

STALL_SECONDS: float = 5.0
"""No room in the ring buffer for this long means the config needs the whole input."""

MAX_STREAMED_FRAME_SECONDS: float = 1.0
"""Custom configs with a larger frame size or step are run in whole-input mode."""

SOURCE_COMPONENT: str = opensmile.config.EXTERNAL_SOURCE_COMPONENT
SINK_COMPONENT: str = opensmile.config.EXTERNAL_OUTPUT_COMPONENT

CONFIG_ROOT: Path = Path(opensmile.__file__).resolve().parent / "core" / opensmile.config.CONFIG_ROOT
"""Where the installed opensmile package keeps its configs (read at run time, never copied)."""

# Include options the Python API always supplies; a config that names them
# without a usable default gets the same files opensmile.Smile would pass.
_API_OPTION_INCLUDES: dict[str, str] = {
    "bufferModeRbConf": "shared/BufferModeRb.conf.inc",
    "frameModeFunctionalsConf": "shared/FrameModeFunctionals.conf.inc",
}

_WAVE_SOURCES = frozenset({"cWaveSource"})
_FILE_SINKS = frozenset({"cArffSink", "cCsvSink", "cHtkSink", "cLibsvmSink", "cDatadumpSink", "cDataPrintSink", "cNullSink"})
PYTHON_API_HOOKS: dict[str, str] = {
    "source": "\\{\\cm[source{?}:include external source]}",
    "sink": "\\{\\cm[sink{?}:include external sink]}",
}
"""The include lines through which openSMILE's Python API injects its source and sink."""
# Components that need their whole input before producing anything.
_WHOLE_INPUT_TYPES = frozenset({"cFullinputMean"})

_INCLUDE = re.compile(r"^\s*\\\{(?P<target>.*)\}\s*$")
_OPTION = re.compile(
    r"\\cm\[\s*(?P<name>[A-Za-z_][\w.]*)\s*(?:\((?P<short>[^)]*)\))?\s*(?:\{(?P<default>[^}]*)\})?\s*(?::(?P<description>[^\]]*))?\]"
)
_SECTION = re.compile(r"^\s*\[\s*(?P<name>[^:\]\s]+)\s*:\s*(?P<type>[^\]\s]+)\s*\]")
_INSTANCE = re.compile(r"^\s*instance\s*\[\s*(?P<name>[^\]\s]+)\s*\]\s*\.\s*(?P<key>\w+)\s*=\s*(?P<value>.*?)\s*$")
_KEY_VALUE = re.compile(r"^\s*(?P<key>[^=\s;#%/][^=]*?)\s*=\s*(?P<value>.*?)\s*$")
_COMMENT_PREFIXES = (";", "#", "//", "%")
_MAX_INCLUDE_DEPTH = 32

_UNKNOWN_MESSAGE = "unknown feature set {spec!r}; known: is10, egemaps, compare, emobase, or a path to an openSMILE .conf"


class FeatureError(ValueError):
    """A feature set cannot be used, or a signal gave no usable features."""


@dataclass(frozen=True)
class AdaptedConfig:
    """A custom config made ready for openSMILE's Python API.

    Attributes:
        text: the self-contained config text (includes inlined).
        level: the data memory level whose frames are the features.
        streamable: whether audio may be streamed through a ring buffer.
    """

    text: str
    level: str
    streamable: bool


@dataclass(frozen=True)
class FeatureSetSpec:
    """A resolved feature set.

    Attributes:
        id: ``is10`` … for built-ins, ``config-<16 hex>`` for custom configs.
        level: the data memory level read by the sink.
        config_text: the adapted text of a custom config; ``None`` for built-ins.
        streamable: whether audio may be streamed through a ring buffer.
    """

    id: str
    level: str
    config_text: str | None = None
    streamable: bool = True

    @property
    def builtin(self) -> bool:
        """Whether this is one of :data:`FEATURE_SETS`."""
        return self.config_text is None

    @property
    def config_path(self) -> str | None:
        """The installed config of a built-in set, in this process's opensmile package."""
        # Resolved where it is used: a Ray worker's package may live elsewhere.
        if not self.builtin:
            return None
        return str(CONFIG_ROOT / f"{FEATURE_SETS[self.id].value}{opensmile.config.CONFIG_EXT}")


def resolve_feature_set(spec: str, *, storage_options: storage.StorageOptions | None = None) -> FeatureSetSpec:
    """Resolve a feature set name or config location.

    Args:
        spec: ``is10``, ``egemaps``, ``compare``, ``emobase`` (any case), or a
            local path or URI of an openSMILE config.
        storage_options: filesystem options for a config URI.

    Returns:
        the resolved feature set.

    Raises:
        FeatureError: for unknown names, missing files and configs that cannot
            be adapted.
    """
    name = spec.strip().lower()
    if name in FEATURE_SETS:
        return FeatureSetSpec(id=name, level=FUNCTIONALS_LEVEL)
    looks_like_path = "/" in spec or os.sep in spec or "://" in spec or spec.endswith((".conf", ".inc"))
    if not looks_like_path and not os.path.isfile(spec):
        raise FeatureError(_UNKNOWN_MESSAGE.format(spec=spec))
    try:
        found = storage.exists(spec, storage_options=storage_options)
    except (OSError, ValueError) as error:
        raise FeatureError(f"{_UNKNOWN_MESSAGE.format(spec=spec)} ({storage.describe_error(error)})") from None
    if not found:
        raise FeatureError(f"{_UNKNOWN_MESSAGE.format(spec=spec)} (no such file)")
    adapted = adapt_config(spec, storage_options=storage_options)
    digest = hashlib.sha256(adapted.text.encode("utf-8")).hexdigest()
    return FeatureSetSpec(id=f"config-{digest[:16]}", level=adapted.level, config_text=adapted.text, streamable=adapted.streamable)


def adapt_config(uri: str, *, storage_options: storage.StorageOptions | None = None) -> AdaptedConfig:
    """Make an openSMILE config self-contained and ready for the Python API.

    Includes (``\\{file}`` and ``\\{\\cm[option{default}:…]}``) are inlined,
    each resolved relative to the folder of the file that includes it. A
    ``cWaveSource`` is replaced by the Python API's source include and every
    file sink (``cArffSink``, ``cCsvSink``, ``cHtkSink`` …) by its sink
    include; the features are read from the level those sinks read (``func``
    when several do). A config already written for the Python API keeps its
    source and sink includes and is read at level ``func``.

    Args:
        uri: local path or URI of the config.
        storage_options: filesystem options for ``uri`` and its includes.

    Returns:
        the adapted config.

    Raises:
        FeatureError: if the config or an include cannot be read, or it has
            no audio input, several inputs, or no single functionals level.
    """
    reader = _ConfigReader(storage_options)
    if "://" not in uri:
        # One spelling per file, so include cycles are recognised at once.
        uri = os.path.abspath(uri)
    lines = _inline(uri, reader, options={}, stack=())
    blocks = _split(lines)
    level = _replace_io(blocks, origin=uri)
    streamable = _streamable(blocks)
    # The level is part of the text, so it is part of the cache key too.
    header = [f"; adapted for openSMILE's Python API by crossemo; features are read from level '{level}'"]
    text = "\n".join(header + [line for block in blocks for line in block.lines]) + "\n"
    return AdaptedConfig(text=text, level=level, streamable=streamable)


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
        options: dict[str, object] = {name: str(CONFIG_ROOT / path) for name, path in _API_OPTION_INCLUDES.items()}
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


# -- config adaptation --------------------------------------------------------


class _ConfigReader:
    """Reads config files and resolves includes relative to the including file."""

    def __init__(self, storage_options: storage.StorageOptions | None) -> None:
        self._options = storage_options

    def read(self, uri: str) -> str:
        try:
            fs, path = storage.filesystem(uri, storage_options=self._options)
            with fs.open(path, "rb") as handle:
                return handle.read().decode("utf-8", errors="replace")
        except (OSError, ValueError) as error:
            raise FeatureError(f"cannot read openSMILE config {uri}: {storage.describe_error(error)}") from None

    def exists(self, uri: str) -> bool:
        try:
            return storage.exists(uri, storage_options=self._options)
        except (OSError, ValueError):
            return False

    def join(self, base: str, target: str) -> str:
        """Resolve ``target`` against the folder of ``base``."""
        if "://" in target:
            return target
        if "://" not in base:
            # os.path.join keeps an absolute target as it is.
            return os.path.normpath(os.path.join(os.path.dirname(base), target))
        fs, path = storage.filesystem(base, storage_options=self._options)
        joined = target if target.startswith("/") else posixpath.join(posixpath.dirname(path), target)
        return fs.unstrip_protocol(posixpath.normpath(joined).lstrip("/"))


def _is_comment(stripped: str) -> bool:
    return not stripped or stripped.startswith(_COMMENT_PREFIXES)


def _inline(uri: str, reader: _ConfigReader, *, options: dict[str, str], stack: tuple[str, ...]) -> list[str]:
    """The lines of ``uri`` with every include replaced by the included lines.

    ``options`` remembers the file each include option resolved to, so a later
    bare ``\\{\\cm[name]}`` includes the same file, as openSMILE does.
    """
    if uri in stack:
        raise FeatureError(f"openSMILE config includes itself: {' -> '.join((*stack, uri))}")
    if len(stack) >= _MAX_INCLUDE_DEPTH:
        raise FeatureError(f"openSMILE config includes are nested deeper than {_MAX_INCLUDE_DEPTH} levels at {uri}")
    lines: list[str] = []
    in_block_comment = False
    for line in reader.read(uri).splitlines():
        stripped = line.strip()
        if in_block_comment:
            in_block_comment = "*/" not in stripped
            continue
        if stripped.startswith("/*"):
            # Block comments are dropped so their text cannot look like sections.
            in_block_comment = "*/" not in stripped[2:]
            continue
        match = _INCLUDE.match(line)
        if _is_comment(stripped) or not match:
            lines.append(line)
            continue
        target = match["target"].strip()
        option = _OPTION.fullmatch(target)
        if option is None:
            included = reader.join(uri, target)
        else:
            name, default = option["name"], (option["default"] or "").strip()
            if name in PYTHON_API_HOOKS and default in ("", "?"):
                lines.append(PYTHON_API_HOOKS[name])
                continue
            included = _option_include(name, default, uri, reader, options)
        lines.extend(_inline(included, reader, options=options, stack=(*stack, uri)))
    return lines


def _option_include(name: str, default: str, uri: str, reader: _ConfigReader, options: dict[str, str]) -> str:
    """The file an include option refers to: its default, an earlier default, or the Python API's file."""
    if default not in ("", "?"):
        candidate = reader.join(uri, default)
        if reader.exists(candidate):
            options[name] = candidate
            return candidate
    if name in options:
        return options[name]
    if name in _API_OPTION_INCLUDES:
        options[name] = str(CONFIG_ROOT / _API_OPTION_INCLUDES[name])
        return options[name]
    if default not in ("", "?"):
        raise FeatureError(f"{uri}: include option {name!r} names {default!r}, which does not exist")
    raise FeatureError(f"{uri}: include option {name!r} has no default file, and crossemo cannot supply one")


@dataclass
class _Block:
    """A run of config lines: one section (header first), an include hook, or loose lines."""

    lines: list[str]
    name: str | None = None
    type: str | None = None
    hook: str | None = None

    def value(self, key: str) -> str | None:
        """The last value assigned to ``key`` in this block, with option defaults filled in."""
        found = None
        for line in self.lines[1:]:
            match = _KEY_VALUE.match(line)
            if match and match["key"] == key:
                found = _fill_defaults(match["value"])
        return found


def _fill_defaults(value: str) -> str:
    """Replace each ``\\cm[name{default}:…]`` in a value by its default."""
    return _OPTION.sub(lambda match: (match["default"] or "").strip(), value)


def _split(lines: list[str]) -> list[_Block]:
    blocks = [_Block(lines=[])]
    for line in lines:
        hook = next((name for name, text in PYTHON_API_HOOKS.items() if line == text), None)
        section = _SECTION.match(line) if not _is_comment(line.strip()) else None
        if hook:
            blocks.append(_Block(lines=[line], hook=hook))
            blocks.append(_Block(lines=[]))
        elif section:
            blocks.append(_Block(lines=[line], name=section["name"], type=section["type"]))
        else:
            blocks[-1].lines.append(line)
    return [block for block in blocks if block.lines]


def _instances(blocks: list[_Block]) -> dict[str, str]:
    """Component instance name to type, from every ``componentInstances`` section."""
    found: dict[str, str] = {}
    for block in blocks:
        if block.type == "cComponentManager":
            for line in block.lines[1:]:
                match = _INSTANCE.match(line)
                if match and match["key"] == "type" and not _is_comment(line.strip()):
                    found[match["name"]] = match["value"]
    return found


def _remove_components(blocks: list[_Block], names: set[str]) -> None:
    """Drop the sections and instance declarations of ``names`` (in place)."""
    for block in blocks:
        if block.type == "cComponentManager":
            block.lines = [line for line in block.lines if not ((match := _INSTANCE.match(line)) and match["name"] in names)]
    blocks[:] = [block for block in blocks if block.name not in names or block.type == "cComponentManager"]


def _replace_io(blocks: list[_Block], *, origin: str) -> str:
    """Swap the wave source and file sinks for the Python API's includes; return the sink level."""
    instances = _instances(blocks)
    for reserved in (SOURCE_COMPONENT, SINK_COMPONENT):
        if reserved in instances:
            raise FeatureError(f"{origin}: a component is named {reserved!r}, which the Python API's include needs")
    sections = {block.name: block for block in blocks if block.name and block.type != "cComponentManager"}
    hooks = {block.hook for block in blocks if block.hook}
    waves = sorted(name for name, kind in instances.items() if kind in _WAVE_SOURCES)
    others = sorted(f"{name} ({kind})" for name, kind in instances.items() if kind.endswith("Source") and kind not in _WAVE_SOURCES)
    if others:
        raise FeatureError(f"{origin}: input components other than cWaveSource are not supported: {', '.join(others)}")
    if len(waves) > 1 or (waves and "source" in hooks):
        raise FeatureError(f"{origin}: more than one audio input ({', '.join(waves + sorted(hooks & {'source'}))})")
    if not waves and "source" not in hooks:
        raise FeatureError(f"{origin}: no audio input (neither a cWaveSource nor a \\{{\\cm[source{{?}}:…]}} include)")
    if waves:
        _replace_wave_source(blocks, sections, waves[0], origin=origin)

    sinks = sorted(name for name, kind in instances.items() if kind in _FILE_SINKS)
    levels = []
    for name in sinks:
        level = sections[name].value("reader.dmLevel") if name in sections else None
        if level and level not in levels:
            levels.append(level)
    _remove_components(blocks, set(sinks))
    if "sink" not in hooks:
        blocks.append(_Block(lines=[PYTHON_API_HOOKS["sink"]], hook="sink"))
    written = {block.value("writer.dmLevel") for block in blocks if block.name}
    if len(levels) == 1:
        return levels[0]
    if FUNCTIONALS_LEVEL in levels or (not levels and FUNCTIONALS_LEVEL in written):
        return FUNCTIONALS_LEVEL
    if levels:
        raise FeatureError(f"{origin}: the file sinks read several levels ({', '.join(levels)}) and none is {FUNCTIONALS_LEVEL!r}; keep one sink")
    raise FeatureError(f"{origin}: cannot tell which level holds the functionals (no file sink, and no component writes {FUNCTIONALS_LEVEL!r})")


def _replace_wave_source(blocks: list[_Block], sections: dict[str, _Block], name: str, *, origin: str) -> None:
    section = sections.get(name)
    if section is None:
        raise FeatureError(f"{origin}: the cWaveSource {name!r} has no [{name}:cWaveSource] section")
    level = section.value("writer.dmLevel")
    if not level:
        raise FeatureError(f"{origin}: the cWaveSource {name!r} does not set writer.dmLevel")
    for key, whole in (("start", ("0", "0.0", "")), ("end", ("-1", "-1.0", ""))):
        value = section.value(key)
        if value is not None and value.strip() not in whole:
            raise FeatureError(f"{origin}: the cWaveSource reads only part of the file ({key}={value}); crossemo uses whole files")
    # The source include goes where the wave source was, so the data flow
    # order of the config is kept.
    position = next(index for index, block in enumerate(blocks) if block is section)
    blocks[position] = _Block(lines=[PYTHON_API_HOOKS["source"]], hook="source")
    _remove_components(blocks, {name})
    if level != "wave":
        if any(block.value("writer.dmLevel") == "wave" for block in blocks if block.name):
            raise FeatureError(f"{origin}: level 'wave' is written by another component, but the Python API's source writes it")
        _rename_level(blocks, level, "wave")


def _rename_level(blocks: list[_Block], old: str, new: str) -> None:
    """Point every ``…dmLevel`` setting that names ``old`` at ``new``."""
    for block in blocks:
        if not block.name:
            continue
        for index, line in enumerate(block.lines[1:], start=1):
            match = _KEY_VALUE.match(line)
            if match and match["key"].endswith("dmLevel"):
                parts = [new if part.strip() == old else part.strip() for part in match["value"].split(";")]
                block.lines[index] = f"{match['key']} = {';'.join(parts)}"


def _reader_levels(block: _Block) -> list[str]:
    value = block.value("reader.dmLevel") or ""
    return [part.strip() for part in value.split(";") if part.strip()]


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _streamable(blocks: list[_Block]) -> bool:
    """Whether a ring-buffered input is statically safe for this config.

    A component that reads its whole input (``frameMode`` ``full``, ``list``
    or ``var``, or a full-input type) reads only at the end; a ring-buffered
    level it reads would have lost or held back its early frames. Streaming is
    safe when every level such a component reads is configured to grow
    (``isRb = 0``, ``growDyn = 1``), and no frame is longer than
    :data:`MAX_STREAMED_FRAME_SECONDS` (openSMILE hangs while configuring a
    frame longer than the ring buffer).
    """
    components = [block for block in blocks if block.name and block.type != "cComponentManager"]
    writers: dict[str, list[_Block]] = {}
    for block in components:
        level = block.value("writer.dmLevel")
        if level:
            writers.setdefault(level, []).append(block)
    for block in components:
        for key in ("frameSize", "frameStep"):
            raw = block.value(key)
            size = _number(raw)
            if raw is not None and (size is None or size > MAX_STREAMED_FRAME_SECONDS):
                return False
        frame_mode = (block.value("frameMode") or "fixed").strip().lower()
        if block.type not in _WHOLE_INPUT_TYPES and frame_mode == "fixed":
            continue
        for level in _reader_levels(block):
            producers = writers.get(level)
            if not producers:
                return False
            for producer in producers:
                if producer.value("writer.levelconf.isRb") != "0" or producer.value("writer.levelconf.growDyn") != "1":
                    return False
    return True
