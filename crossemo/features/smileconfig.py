"""Adapting openSMILE configs to the Python API.

A **custom config** (local path or URI) may be written for openSMILE's Python
API (input through ``\\{\\cm[source{?}:…]}``, output through
``\\{\\cm[sink{?}:…]}``) or for ``SMILExtract`` (a ``cWaveSource`` and file
sinks such as ``cArffSink``/``cCsvSink``). :func:`adapt_config` turns either
into one self-contained text: includes are inlined (relative to the including
file's folder, as openSMILE resolves them), the wave source is replaced by the
Python API's external audio source and the file sinks by its external sink,
reading the level the file sinks read. So a user's own ``emobase2010.conf``
gives the functionals ``SMILExtract`` computes with it (for mono input; see
:mod:`crossemo.audio` for stereo). The adapted text's SHA-256 names the set in
the feature cache. :func:`adapt_config` also decides statically whether audio
may be streamed through a ring buffer (see :mod:`crossemo.features.extractor`).
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

import opensmile

from crossemo import storage

FUNCTIONALS_LEVEL: str = "func"
"""The data memory level that holds the functionals in openSMILE's own configs."""


MAX_STREAMED_FRAME_SECONDS: float = 1.0
"""Custom configs with a larger frame size or step are run in whole-input mode."""

SOURCE_COMPONENT: str = opensmile.config.EXTERNAL_SOURCE_COMPONENT
SINK_COMPONENT: str = opensmile.config.EXTERNAL_OUTPUT_COMPONENT

CONFIG_ROOT: Path = Path(opensmile.__file__).resolve().parent / "core" / opensmile.config.CONFIG_ROOT
"""Where the installed opensmile package keeps its configs (read at run time, never copied)."""

# Include options the Python API always supplies; a config that names them
# without a usable default gets the same files opensmile.Smile would pass.
API_OPTION_INCLUDES: dict[str, str] = {
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
    if name in API_OPTION_INCLUDES:
        options[name] = str(CONFIG_ROOT / API_OPTION_INCLUDES[name])
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
