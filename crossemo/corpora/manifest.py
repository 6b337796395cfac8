"""A corpus of your own, described by a manifest table instead of file names.

Your speakers' recordings follow no public naming scheme, so you list them in
a CSV or Parquet file, one row per recording::

    my_speakers/
      manifest.csv
      anna/ take1.wav take2.wav …
      ben/ …

    path,speaker,emotion,label
    anna/take1.wav,anna,happy,
    anna/take2.wav,anna,neutral,calm-ish
    s3://bucket/ben/01.flac,ben,Angry,

``path`` is relative to the manifest's folder (it may not leave that folder
with ``..``), or an absolute local path, or a URI such as ``s3://…``.
``speaker`` must not be empty. ``emotion`` is one of ``neutral``, ``anger``,
``joy``, ``sadness`` or a common synonym (``neu``; ``angry``, ``ang``;
``happy``, ``happiness``, ``hap``, ``joyful``; ``sad``), in any case; rows
with any other emotion are skipped, not refused. The optional ``label``
column keeps your own code for the row (by default the emotion as written).
Column names are matched without regard to case, and whitespace around every
cell is dropped (``anna `` is speaker ``anna``). Listed files that do not
exist are skipped with their reason; whether a listed file is audio is
decided by its content, not its suffix (see :mod:`crossemo.corpora.base`);
a malformed manifest is refused with a one-line :class:`CorpusError`
naming the cause. The corpus name in every output is the ``corpus`` option,
by default the manifest file's name without its suffix.

A ``.csv`` manifest may be saved the ways spreadsheets save it:

* encoding: UTF-8, with or without a byte-order mark ("CSV UTF-8"), or
  UTF-16 little- or big-endian with a byte-order mark ("Unicode text").
  Anything else (Windows-1252 "CSV", UTF-16 without a byte-order mark …) is
  refused, naming the first offending byte and its position;
* separator: ``,``, ``;`` or a tab, told from the header line by
  :class:`csv.Sniffer` restricted to those three; a header line with none of
  them is refused. The suffix is ``.csv`` whatever the separator (``.tsv``
  is not accepted);
* blank rows, every cell empty or whitespace (``,,`` is how a spreadsheet
  saves an empty row), are skipped and counted in one warning; row numbers in
  errors still count them. A row only partly empty is refused as before when
  its path or speaker is empty.

Blank rows of a Parquet manifest are skipped the same way.

Speaker ids are used exactly as written (after stripping), but ids of
utterances that differ only in spelling get a warning; they stay different
speakers. Two ids look alike when they are equal after lower-casing
(:meth:`str.casefold`) and, for a whole number, dropping a ``+`` sign, leading
zeros and a zero fraction (see :func:`speaker_key`): ``3``, ``03``, ``+3``
and ``3.0`` look alike, as do ``Anna`` and ``anna``; ``3.5`` and ``35`` do
not, nor do ``3`` and ``s3``.
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import math
import os
import posixpath
import re
import unicodedata
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import fsspec
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from crossemo import storage
from crossemo.corpora.base import CorpusError, Manifest, Skip, Utterance, build_manifest, dangling_link_reason, fingerprint
from crossemo.labels import EMOTIONS

NAME = "manifest"
REQUIRED_COLUMNS: tuple[str, ...] = ("path", "speaker", "emotion")
OPTIONAL_COLUMNS: tuple[str, ...] = ("label",)
SYNONYMS: dict[str, str] = {
    "neutral": "neutral",
    "neu": "neutral",
    "anger": "anger",
    "angry": "anger",
    "ang": "anger",
    "joy": "joy",
    "joyful": "joy",
    "happy": "joy",
    "happiness": "joy",
    "hap": "joy",
    "sadness": "sadness",
    "sad": "sadness",
}
NOT_FOUND = "file not found"
IS_A_FOLDER = "a folder, not a file (a manifest lists files; give a folder as a corpus root or --audio instead)"
_CSV_SUFFIXES = (".csv",)
_PARQUET_SUFFIXES = (".parquet", ".pq")
_WINDOWS_ABSOLUTE = re.compile(r"^[A-Za-z]:[\\/]")
_SEPARATORS = ",;\t"
# The byte-order marks spreadsheets write, with the codec of the text after
# the mark; text without one must be UTF-8.
_BYTE_ORDER_MARKS: tuple[tuple[bytes, str], ...] = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
_WHOLE_NUMBER = re.compile(r"[+-]?\d+(?:\.0*)?")


def normalize_emotion(text: object) -> str | None:
    """The study's name for an emotion written as ``text``, or None if it is not one of the four."""
    if not isinstance(text, str):
        return None
    return SYNONYMS.get(text.strip().lower())


def speaker_key(speaker: str) -> str:
    """The form in which speaker ids that differ only in spelling look alike.

    Unicode-normalised (NFC: a name typed on macOS, ``José`` with a
    combining accent, looks like the same name typed elsewhere), lower-cased,
    and a whole number written plainly: ``03``, ``+3`` and ``3.0`` all become ``3``.
    """
    folded = unicodedata.normalize("NFC", speaker.strip()).casefold()
    if _WHOLE_NUMBER.fullmatch(folded):
        return str(int(folded.partition(".")[0]))
    return folded


def parse(speaker: str, emotion: str, label: str = "") -> Utterance | Skip:
    """Classify one manifest row by its emotion.

    Args:
        speaker: the row's speaker, not empty.
        emotion: the emotion as written in the manifest.
        label: the row's own code; the emotion as written when empty.
    """
    written = emotion.strip()
    if not written:
        return Skip("no emotion given")
    name = normalize_emotion(written)
    if name is None:
        return Skip(f"emotion {written!r} is not one of the four classes ({', '.join(EMOTIONS)} or a synonym)")
    return Utterance(speaker=speaker, emotion=name, label=label.strip() or written)


def corpus_name(path: str) -> str:
    """The default corpus name of a manifest: its file name without the suffix."""
    name = posixpath.basename(path.replace("\\", "/").rstrip("/"))
    return name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name


@dataclass(frozen=True)
class _Target:
    """Where one row's file lives: the filesystem, the path in it, and its URI."""

    fs: fsspec.AbstractFileSystem
    path: str
    uri: str
    relative: bool


def prepare_manifest(path: str, *, corpus: str | None = None, storage_options: storage.StorageOptions | None = None) -> Manifest:
    """Read a corpus of your own from a CSV or Parquet manifest.

    Args:
        path: the manifest file, local or on object storage (``.csv``,
            ``.parquet`` or ``.pq``).
        corpus: the corpus name written into every row; by default the
            manifest's file name without its suffix.
        storage_options: filesystem options for the manifest, also used for
            listed URIs of the same protocol.

    Returns:
        the manifest; rows with other emotions, listed files that do not exist
        and non-audio files are counted as skipped. Its warnings count the
        blank rows skipped and name speaker ids that differ only in spelling.

    Raises:
        CorpusError: the manifest is missing or unreadable, lacks a column,
            is a CSV file not in UTF-8 or UTF-16 with a byte-order mark or
            without a ``,``, ``;`` or tab separator in its header line, lists a
            relative path leaving its folder, lists a file twice, has a
            non-blank row without speaker or path, or holds no usable utterance.
    """
    name = (corpus if corpus is not None else corpus_name(path)).strip()
    if not name:
        raise CorpusError(f"manifest {path}: the corpus name is empty")
    fs, manifest_path = _manifest_filesystem(path, storage_options)
    frame = _read_table(fs, manifest_path, path)
    located = _locate_rows(frame, path, fs, manifest_path, storage_options=storage_options, label=f"manifest {path}", require_speaker=True)
    labels = frame["label"].tolist() if "label" in frame.columns else [""] * len(frame)
    rows = [(target, parse(frame["speaker"].iat[index], frame["emotion"].iat[index], labels[index])) for index, target in located]
    infos = _file_infos([target for target, verdict in rows if isinstance(verdict, Utterance)], fs, path)
    utterances, skipped = [], []
    for target, verdict in rows:
        info = infos.get((id(target.fs), target.path)) if isinstance(verdict, Utterance) else None
        if isinstance(verdict, Utterance) and info is None:
            verdict = Skip(_absence_reason(target))
        if isinstance(verdict, Skip):
            skipped.append({"uri": target.uri, "corpus": name, "reason": verdict.reason})
        else:
            utterances.append({"corpus": name, "speaker": verdict.speaker, "emotion": verdict.emotion, "uri": target.uri, "label": verdict.label, "fingerprint": fingerprint(info)})
    blanks = len(frame) - len(located)
    warnings = [f"{blanks} blank row{'' if blanks == 1 else 's'} skipped in manifest {path}"] if blanks else []
    warnings += spelling_warnings(row["speaker"] for row in utterances)
    return build_manifest(name, path, utterances, skipped, warnings=warnings)


FILE_COLUMNS = ("uri", "fingerprint")
"""The columns :func:`list_files` adds to a table's own."""


def list_files(path: str, *, storage_options: storage.StorageOptions | None = None, reserved: Collection[str] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a table of audio files to label: a ``path`` column, any others carried along.

    The file format, encodings and path rules are those of a corpus manifest
    (see the module docstring); only ``path`` is required, and no row is
    skipped for its emotion.

    Args:
        path: the table, local or a URI.
        storage_options: fsspec options for object storage.
        reserved: column names the caller writes itself, which the table may not bring.

    Returns:
        ``(files, missing)``: the rows whose file exists, with the table's
        columns (lower-case names, text cells) plus ``uri`` and ``fingerprint``,
        in the table's order; and ``uri``, ``speaker`` (the table's, else empty) and ``reason`` of listed files that do not exist.

    Raises:
        CorpusError: the table is missing or unreadable, lacks ``path``, has a
            column named ``uri``, ``fingerprint`` or one of ``reserved``; or rows
            without a path, leaving its folder or listing a file twice, all named in one line.
    """
    fs, manifest_path = _manifest_filesystem(path, storage_options)
    frame = _read_table(fs, manifest_path, path, required=("path",))
    own = [column for column in (*FILE_COLUMNS, *reserved) if column in frame]
    if own:
        raise CorpusError(f"{path}: its column(s) {', '.join(own)} would be overwritten by crossemo's own; rename them (for example {own[0]}_given)")
    located = _locate_rows(frame, path, fs, manifest_path, storage_options=storage_options, label=path, require_speaker=False)
    frame = frame.iloc[[index for index, _ in located]].reset_index(drop=True)
    targets = [target for _, target in located]
    infos = _file_infos(targets, fs, path)
    found = [infos.get((id(target.fs), target.path)) for target in targets]
    present = np.array([info is not None for info in found], dtype=bool)
    files = frame[present].assign(
        uri=[target.uri for target, info in zip(targets, found) if info is not None],
        fingerprint=[fingerprint(info) for info in found if info is not None],
    ).reset_index(drop=True)
    speakers = frame["speaker"] if "speaker" in frame else pd.Series("", index=frame.index)
    missing = pd.DataFrame(
        [{"uri": target.uri, "speaker": speaker, "reason": _absence_reason(target)} for target, info, speaker in zip(targets, found, speakers) if info is None],
        columns=["uri", "speaker", "reason"],
    )
    return files, missing


MAX_ROW_PROBLEMS = 5
"""Bad rows a manifest's error names; it counts the rest."""


class _RowProblem(ValueError):
    """A row of a table that cannot be used; the message names the row, not the table."""


def _locate_rows(
    frame: pd.DataFrame, path: str, fs: fsspec.AbstractFileSystem, manifest_path: str, *,
    storage_options: storage.StorageOptions | None, label: str, require_speaker: bool,
) -> list[tuple[int, _Target]]:
    """Each non-blank row's file, checked: its position in ``frame`` and where it lives.

    Args:
        frame: the table, text cells (``path``, and ``speaker`` when required).
        path: the table's URI, as given.
        fs: the table's filesystem; ``manifest_path`` its path there.
        storage_options: fsspec options, used for listed URIs of the table's protocol.
        label: how errors name the table.
        require_speaker: whether an empty ``speaker`` makes a row bad.

    Returns:
        ``(position, target)`` of every row that is not blank, in order.

    Raises:
        CorpusError: one line naming every bad row (an empty path or speaker, a
            path leaving the table's folder or unreachable, a file listed
            twice); rows are numbered from 1 for the first row under the
            header, blank rows counted, so row N is the spreadsheet's row N + 1.
    """
    folder = posixpath.dirname(manifest_path)
    filesystems: dict[str, fsspec.AbstractFileSystem] = {}
    blank = frame.eq("").all(axis=1).to_numpy()
    speakers = frame["speaker"].tolist() if require_speaker else [None] * len(frame)
    located: list[tuple[int, _Target]] = []
    seen: dict[str, tuple[int, str]] = {}
    problems: list[str] = []
    for index, (entry, speaker) in enumerate(zip(frame["path"], speakers, strict=True)):
        if blank[index]:
            continue
        row = index + 1
        try:
            if not entry:
                raise _RowProblem(f"row {row} has an empty path")
            if require_speaker and not speaker:
                raise _RowProblem(f"row {row} ({entry}) has an empty speaker")
            target = _resolve(entry, row, fs, folder, path, storage_options, filesystems)
            if target.uri in seen:
                first_row, first_entry = seen[target.uri]
                raise _RowProblem(f"lists {entry} twice (rows {first_row} and {row}{'' if first_entry == entry else f', as {first_entry}'})")
        except _RowProblem as problem:
            # Every bad row in one message: fixing a messy table one error per run took as many runs as it had problems.
            problems.append(str(problem))
            continue
        seen[target.uri] = (row, entry)
        located.append((index, target))
    if len(problems) == 1:
        raise CorpusError(f"{label}: {problems[0]}")
    if problems:
        more = f"; and {len(problems) - MAX_ROW_PROBLEMS} more" if len(problems) > MAX_ROW_PROBLEMS else ""
        raise CorpusError(f"{label} has {len(problems)} bad rows: {'; '.join(problems[:MAX_ROW_PROBLEMS])}{more}")
    return located


def _absence_reason(target: _Target) -> str:
    """Why a listed path has no file to read: a local folder (or a link to one), a dangling link, or nothing there.

    On object storage a path is only ever "not found": telling a prefix from
    nothing would cost one request per missing row, one after another.
    """
    if not storage.is_local(target.uri):
        return NOT_FOUND
    if os.path.isdir(target.path):
        return IS_A_FOLDER
    if os.path.islink(target.path):
        return dangling_link_reason(target.path)
    # An accented name can be spelled in two Unicode forms that look alike (macOS
    # tools write NFD); the file system tells them apart, so name the one that exists.
    spelled = _spelled_on_disk(target.path)
    if spelled is None:
        return NOT_FOUND
    for form in ("NFC", "NFD"):
        if spelled == unicodedata.normalize(form, target.path):
            return f"{NOT_FOUND} as spelled, but it exists with its accents in Unicode form {form}; save the manifest's paths in {form}"
    return f"{NOT_FOUND} as spelled, but it exists as {spelled}, its names' accents in both Unicode forms; list it as spelled there"


def _spelled_on_disk(path: str) -> str | None:
    """``path`` as the file system spells it where it exists only with some names' accents in the other Unicode form; else ``None``.

    Both whole-path forms first; then name by name, since a folder and the
    file in it can be saved in different forms (a folder made on one system,
    files copied in from another). Only accented names need a folder listed,
    and each folder is listed once while it is unchanged (:func:`_by_composed_name`).
    """
    for form in ("NFC", "NFD"):
        spelled = unicodedata.normalize(form, path)
        if spelled != path and os.path.exists(spelled):
            return spelled
    head, names = path, []
    while not os.path.exists(head):
        head, name = os.path.split(head)
        if not name:
            return None
        names.append(name)
    for name in reversed(names):
        composed = unicodedata.normalize("NFC", name)
        if os.path.exists(os.path.join(head, name)) or composed == unicodedata.normalize("NFD", name):
            head = os.path.join(head, name)
            continue
        try:
            matches = _by_composed_name(head, os.stat(head).st_mtime_ns).get(composed, [])
        except OSError:
            return None
        if len(matches) != 1:
            return None
        head = os.path.join(head, matches[0])
    return head if head != path and os.path.exists(head) else None


@functools.lru_cache(maxsize=64)
def _by_composed_name(folder: str, modified_ns: int) -> dict[str, list[str]]:
    """A folder's entries by their NFC spelling; keyed by its modification time too, so a changed folder is listed again."""
    entries: dict[str, list[str]] = {}
    for entry in os.listdir(folder):
        entries.setdefault(unicodedata.normalize("NFC", entry), []).append(entry)
    return entries


def spelling_warnings(speakers: Iterable[str]) -> list[str]:
    """One warning per group of speaker ids with the same :func:`speaker_key`, in order of first appearance."""
    groups: dict[str, dict[str, None]] = {}
    for speaker in speakers:
        groups.setdefault(speaker_key(speaker), {})[speaker] = None
    warnings = []
    for spellings in groups.values():
        if len(spellings) > 1:
            quoted = [repr(spelling) for spelling in spellings]
            warnings.append(f"speakers {', '.join(quoted[:-1])} and {quoted[-1]} differ only in spelling; they are treated as different speakers")
    return warnings


def _cell(value: object) -> str:
    """A table cell as stripped text; missing values become empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    return str(value).strip()


def _whole_number(value: object) -> object:
    """A float that holds a whole number exactly (below 2**53) as an int; anything else as it is."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _manifest_filesystem(path: str, storage_options: storage.StorageOptions | None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem holding the manifest and its path there, once it is known to be a file."""
    try:
        fs, manifest_path = storage.filesystem(path, storage_options=storage_options)
        if not fs.exists(manifest_path):
            raise CorpusError(f"manifest {path} does not exist")
        if fs.isdir(manifest_path):
            raise CorpusError(f"manifest {path} is a folder, not a .csv or .parquet file")
    except CorpusError:
        raise
    except Exception as error:  # storage back-ends raise many kinds; name it and stop
        raise CorpusError(f"cannot reach manifest {path}: {storage.describe_error(error)}") from error
    return fs, manifest_path


def _read_table(fs: fsspec.AbstractFileSystem, manifest_path: str, path: str, *, required: tuple[str, ...] = REQUIRED_COLUMNS) -> pd.DataFrame:
    """Read the manifest as stripped text cells with lower-case column names, and check it has the ``required`` ones."""
    suffix = posixpath.splitext(manifest_path)[1].lower()
    if suffix not in _CSV_SUFFIXES + _PARQUET_SUFFIXES:
        raise CorpusError(f"manifest {path} must be a .csv or .parquet file")
    try:
        with fs.open(manifest_path, "rb") as handle:
            # Whole numbers stay whole where a cell is empty: as floats, speaker 1 would read 1.0, and long ids lose digits.
            frame = _read_csv(handle.read(), path) if suffix in _CSV_SUFFIXES else pq.read_table(handle).to_pandas(integer_object_nulls=True)
    except CorpusError:
        raise
    except Exception as error:  # parsers and storage back-ends raise many kinds; name it and stop
        raise CorpusError(f"cannot read manifest {path}: {storage.describe_error(error)}") from error
    columns = [str(column).strip().lower() for column in frame.columns]
    doubled = sorted({column for column in columns if columns.count(column) > 1})
    if doubled:
        raise CorpusError(f"manifest {path} has the column {', '.join(doubled)} more than once")
    frame.columns = columns
    missing = [column for column in required if column not in columns]
    if missing:
        raise CorpusError(f"manifest {path} lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)} (it has: {', '.join(columns) or 'no columns'})")
    if "speaker" in frame and pd.api.types.is_float_dtype(frame["speaker"]):
        # Speaker numbers with a gap are stored as floats in Parquet: speaker 3 would read "3.0".
        frame["speaker"] = pd.Series([_whole_number(value) for value in frame["speaker"]], index=frame.index, dtype=object)
    return frame.map(_cell)


def _read_csv(data: bytes, path: str) -> pd.DataFrame:
    """Parse a CSV manifest's bytes into text cells, blank rows kept so that row numbers match the file.

    Raises:
        CorpusError: the text is empty, not UTF-8 or UTF-16 with a byte-order
            mark, or its header line has none of the accepted separators.
    """
    text = _decode(data, path)
    if not text.strip():
        raise CorpusError(f"manifest {path} is empty")
    header = text.partition("\n")[0].rstrip("\r")
    try:
        # A header of one plain name is a table of one column (``path`` alone, for predict).
        separator = "," if re.fullmatch(r"\s*\w+\s*", header) else csv.Sniffer().sniff(header, delimiters=_SEPARATORS).delimiter
    except csv.Error as error:
        raise CorpusError(f"manifest {path}: cannot tell the column separator from the header line {header[:80]!r}; separate columns with ',', ';' or a tab") from error
    return pd.read_csv(io.StringIO(text), sep=separator, dtype=str, keep_default_na=False, skip_blank_lines=False)


def _decode(data: bytes, path: str) -> str:
    """The text of a CSV manifest: UTF-8 with or without a byte-order mark, or UTF-16 with one.

    Raises:
        CorpusError: the bytes are not such text; names the first offending byte and its position.
    """
    mark, codec = next(((mark, codec) for mark, codec in _BYTE_ORDER_MARKS if data.startswith(mark)), (b"", "utf-8"))
    body = data[len(mark) :]
    try:
        text, undecodable = body.decode(codec), None
    except UnicodeDecodeError as error:
        text, undecodable = body[: error.start].decode(codec), error.start
    # a NUL character is valid UTF-8 but never part of a saved table: it means
    # UTF-16 without a byte-order mark (or UTF-32), which would otherwise
    # surface as garbled column names; report it if it comes first
    nul = text.find("\0")
    if nul < 0 and undecodable is None:
        return text
    position = len(mark) + (len(text[:nul].encode(codec)) if nul >= 0 else undecodable)
    raise CorpusError(f"manifest {path} is not UTF-8 or UTF-16 with a BOM (byte 0x{data[position]:02x} at position {position}); save it as 'CSV UTF-8'")


def _resolve(
    entry: str,
    row: int,
    fs: fsspec.AbstractFileSystem,
    folder: str,
    path: str,
    storage_options: storage.StorageOptions | None,
    filesystems: dict[str, fsspec.AbstractFileSystem],
) -> _Target:
    """Locate one row's file: relative to the manifest's folder, an absolute local path, or a URI.

    Raises:
        _RowProblem: the path leaves the manifest's folder, or its filesystem cannot be reached.
    """
    if "://" in entry or entry.startswith("/") or _WINDOWS_ABSOLUTE.match(entry):
        protocol = fsspec.core.split_protocol(entry)[0] or "file"
        manifest_protocol = fsspec.core.split_protocol(path)[0] or "file"
        try:
            if protocol not in filesystems:
                options = storage_options if protocol == manifest_protocol else None
                filesystems[protocol] = storage.filesystem(entry, storage_options=options)[0]
            target_fs = filesystems[protocol]
            target_path = target_fs._strip_protocol(entry)
            if protocol == "file":
                target_path = posixpath.normpath(target_path)
        except Exception as error:  # an unknown protocol or a back-end that cannot start
            raise _RowProblem(f"row {row} path {entry} cannot be reached: {storage.describe_error(error)}") from error
        return _Target(target_fs, target_path, storage.unstrip(target_fs, target_path, entry), relative=False)
    relative = posixpath.normpath(entry.replace("\\", "/"))
    if relative.startswith("/"):
        # "\\x" is rooted at the current drive on Windows: no drive here to root it at, and joined as "/x" it would leave the folder unnoticed.
        raise _RowProblem(f"row {row} path {entry} starts at the root of a Windows drive; write it relative to the manifest's folder")
    if relative == ".." or relative.startswith("../"):
        raise _RowProblem(f"row {row} path {entry} leads outside the manifest's folder")
    target_path = posixpath.join(folder, relative) if relative != "." else folder
    return _Target(fs, target_path, storage.unstrip(fs, target_path, path), relative=True)


def _file_infos(targets: list[_Target], fs: fsspec.AbstractFileSystem, path: str) -> dict[tuple[int, str], dict]:
    """The listing entries of the files that exist, keyed by ``(id(fs), path)``.

    Files relative to the manifest come from one listing of their deepest
    common folder; other files are asked about one by one.
    """
    infos: dict[tuple[int, str], dict] = {}
    relative = [target for target in targets if target.relative]
    try:
        if relative:
            common = posixpath.commonpath([posixpath.dirname(target.path) for target in relative])
            listing = fs.find(common, detail=True) if fs.isdir(common) else {}
            wanted = {target.path for target in relative}
            for item, info in listing.items():
                if item in wanted and info.get("type", "file") == "file":
                    infos[(id(fs), item)] = info
        for target in targets:
            if (id(target.fs), target.path) in infos:
                continue
            # Asked one by one: files outside the manifest's folder, and files a
            # listing does not describe as files (symbolic links, or files in
            # linked folders, which a listing does not enter); info() follows links.
            try:
                info = target.fs.info(target.path)
            except FileNotFoundError:
                continue
            if info.get("type") == "file":
                infos[(id(target.fs), target.path)] = info
    except Exception as error:  # storage back-ends raise many kinds; name it and stop
        raise CorpusError(f"cannot look up the files listed in manifest {path}: {storage.describe_error(error)}") from error
    return infos

