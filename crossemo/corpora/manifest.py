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
Column names are matched without regard to case. Listed files that do not
exist are skipped with their reason; whether a listed file is audio is decided
by its content, not its name (see :mod:`crossemo.corpora.base`); a malformed manifest is refused with a :class:`CorpusError` naming the
cause. The corpus name in every output is the ``corpus`` option, by default
the manifest file's name without its suffix.
"""

from __future__ import annotations

import math
import posixpath
import re
from dataclasses import dataclass

import fsspec
import pandas as pd
import pyarrow.parquet as pq

from crossemo import storage
from crossemo.corpora.base import CorpusError, Manifest, Skip, Utterance, build_manifest, fingerprint
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
_CSV_SUFFIXES = (".csv",)
_PARQUET_SUFFIXES = (".parquet", ".pq")
_WINDOWS_ABSOLUTE = re.compile(r"^[A-Za-z]:[\\/]")


def normalize_emotion(text: object) -> str | None:
    """The study's name for an emotion written as ``text``, or None if it is not one of the four."""
    if not isinstance(text, str):
        return None
    return SYNONYMS.get(text.strip().lower())


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
        and non-audio files are counted as skipped.

    Raises:
        CorpusError: the manifest is missing or unreadable, lacks a column,
            lists a relative path leaving its folder, lists a file twice, has
            a row without speaker or path, or holds no usable utterance.
    """
    name = (corpus if corpus is not None else corpus_name(path)).strip()
    if not name:
        raise CorpusError(f"manifest {path}: the corpus name is empty")
    fs, manifest_path = _manifest_filesystem(path, storage_options)
    frame = _read_table(fs, manifest_path, path)
    folder = posixpath.dirname(manifest_path)
    filesystems: dict[str, fsspec.AbstractFileSystem] = {}
    rows: list[tuple[_Target, Utterance | Skip]] = []
    seen: dict[str, tuple[int, str]] = {}
    labels = frame["label"].tolist() if "label" in frame.columns else [""] * len(frame)
    for index, (raw_path, raw_speaker, raw_emotion, raw_label) in enumerate(zip(frame["path"], frame["speaker"], frame["emotion"], labels, strict=True)):
        row = index + 1
        entry, speaker = _cell(raw_path), _cell(raw_speaker)
        if not entry:
            raise CorpusError(f"manifest {path}: row {row} has an empty path")
        if not speaker:
            raise CorpusError(f"manifest {path}: row {row} ({entry}) has an empty speaker")
        target = _resolve(entry, row, fs, folder, path, storage_options, filesystems)
        if target.uri in seen:
            first_row, first_entry = seen[target.uri]
            raise CorpusError(f"manifest {path} lists {entry} twice (rows {first_row} and {row}{'' if first_entry == entry else f', as {first_entry}'})")
        seen[target.uri] = (row, entry)
        verdict = parse(speaker, _cell(raw_emotion), _cell(raw_label))
        rows.append((target, verdict))
    infos = _file_infos([target for target, verdict in rows if isinstance(verdict, Utterance)], fs, path)
    utterances, skipped = [], []
    for target, verdict in rows:
        info = infos.get((id(target.fs), target.path)) if isinstance(verdict, Utterance) else None
        if isinstance(verdict, Utterance) and info is None:
            verdict = Skip(NOT_FOUND)
        if isinstance(verdict, Skip):
            skipped.append({"uri": target.uri, "corpus": name, "reason": verdict.reason})
        else:
            utterances.append({"corpus": name, "speaker": verdict.speaker, "emotion": verdict.emotion, "uri": target.uri, "label": verdict.label, "fingerprint": fingerprint(info)})
    return build_manifest(name, path, utterances, skipped)


def _cell(value: object) -> str:
    """A table cell as stripped text; missing values become empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    return str(value).strip()


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


def _read_table(fs: fsspec.AbstractFileSystem, manifest_path: str, path: str) -> pd.DataFrame:
    """Read the manifest as text cells with lower-case column names, and check its columns."""
    suffix = posixpath.splitext(manifest_path)[1].lower()
    if suffix not in _CSV_SUFFIXES + _PARQUET_SUFFIXES:
        raise CorpusError(f"manifest {path} must be a .csv or .parquet file")
    try:
        with fs.open(manifest_path, "rb") as handle:
            if suffix in _CSV_SUFFIXES:
                frame = pd.read_csv(handle, dtype=str, keep_default_na=False, encoding="utf-8-sig")
            else:
                frame = pq.read_table(handle).to_pandas()
    except pd.errors.EmptyDataError as error:
        raise CorpusError(f"manifest {path} is empty") from error
    except Exception as error:  # parsers and storage back-ends raise many kinds; name it and stop
        raise CorpusError(f"cannot read manifest {path}: {storage.describe_error(error)}") from error
    columns = [str(column).strip().lower() for column in frame.columns]
    doubled = sorted({column for column in columns if columns.count(column) > 1})
    if doubled:
        raise CorpusError(f"manifest {path} has the column {', '.join(doubled)} more than once")
    frame.columns = columns
    missing = [column for column in REQUIRED_COLUMNS if column not in columns]
    if missing:
        raise CorpusError(f"manifest {path} lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)} (it has: {', '.join(columns) or 'no columns'})")
    return frame


def _resolve(
    entry: str,
    row: int,
    fs: fsspec.AbstractFileSystem,
    folder: str,
    path: str,
    storage_options: storage.StorageOptions | None,
    filesystems: dict[str, fsspec.AbstractFileSystem],
) -> _Target:
    """Locate one row's file: relative to the manifest's folder, an absolute local path, or a URI."""
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
            raise CorpusError(f"manifest {path}: row {row} path {entry} cannot be reached: {storage.describe_error(error)}") from error
        return _Target(target_fs, target_path, storage.unstrip(target_fs, target_path, entry), relative=False)
    relative = posixpath.normpath(entry.replace("\\", "/"))
    if relative == ".." or relative.startswith("../"):
        raise CorpusError(f"manifest {path}: row {row} path {entry} leads outside the manifest's folder")
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

