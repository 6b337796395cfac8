"""Audio to label: folders, object-storage prefixes and tables of files, as one list of files.

``crossemo predict --audio`` (and ``crossemo train --adapt-to``) take any mix of

* a folder or ``s3://`` prefix: every audio-like file below it (``.wav``,
  ``.flac`` …; see :data:`crossemo.corpora.base.AUDIO_LIKE_SUFFIXES`), links followed;
* one audio file;
* a table (``.csv``, ``.parquet``, ``.pq``) with a ``path`` column, read like a
  corpus manifest (:func:`crossemo.corpora.manifest.list_files`), whose other
  columns travel with each file to the predictions.

**Speakers.** Methods that normalise each speaker by their own recordings
need to know whose recordings belong together. In order of precedence: the
table's ``speaker`` column (a blank cell there falls to the next rule, for
that file alone); else ``speaker_pattern``, a regular expression
with a group named ``speaker`` searched in each file's URI; else every
``--audio`` input is one *recording batch* (its files are normalised
together, as if one speaker), which costs accuracy when it holds several
speakers (the README gives the measured cost).
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa

from crossemo import storage
from crossemo.corpora import base, manifest

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
"""An ``--audio`` URI with one of these suffixes is a table of files, anything else a folder or prefix."""

FIXED_COLUMNS = ("uri", "fingerprint", "speaker", "input")
"""Columns every listed file has; a table's other columns are carried along."""
MISSING_COLUMNS = ["uri", "speaker", "stage", "reason"]
"""The columns of :attr:`AudioFiles.missing`: those of a prediction rejection."""


class InputError(ValueError):
    """The audio to label cannot be listed; the message names the input and the cause."""


@dataclass
class AudioFiles:
    """Every file to label, and what could not be.

    Attributes:
        files: one row per file: ``uri``, ``fingerprint`` (size and stamp),
            ``speaker``, ``input`` (the ``--audio`` it came from), then the
            tables' other columns (text; ``""`` where a table lacks one).
        missing: ``uri``, ``speaker`` (a table's, else empty), ``stage``
            (``"read"``) and ``reason`` of listed files that do not exist or are dangling links.
        speaker_rule: ``"table"``, ``"pattern"`` or ``"batch"`` per input, by input URI.
        extra_columns: the tables' other columns, in first-seen order.
        warnings: sentences for the user (fallbacks, files listed twice).
    """

    files: pd.DataFrame
    missing: pd.DataFrame
    speaker_rule: dict[str, str]
    extra_columns: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def list_inputs(
    uris: list[str], *, speaker_pattern: str | None = None, storage_options: storage.StorageOptions | None = None,
    reserved_columns: Collection[str] = (), flag: str = "--audio", speakers_matter: bool = True,
) -> AudioFiles:
    """List the files of every input, with each file's speaker.

    Args:
        uris: folders, ``s3://`` prefixes or tables of files (see the module docstring).
        speaker_pattern: a regular expression with a named group ``speaker``,
            searched in every URI without a speaker from a table.
        storage_options: fsspec options for object storage.
        reserved_columns: column names the caller writes itself, which a table may not bring.
        flag: the option the inputs came from, for messages.
        speakers_matter: whether the model normalises each speaker by their
            own recordings; when not, the speaker fallbacks go unwarned (they cost it nothing).

    Returns:
        the files (a file given by two inputs is kept once, from the first).

    Raises:
        InputError: no input, an empty one (listing no audio file, even beside others that do), a bad pattern, an input that cannot be
            read, a table column named as one of ours, or no audio file in any input.
    """
    if not uris:
        raise InputError(f"no audio given ({flag} FOLDER, s3:// prefix, or a CSV/Parquet table with a path column)")
    if any(not uri.strip() for uri in uris):
        # An empty path would list the current folder.
        raise InputError(f"{flag} is empty; give an audio file, a folder, an s3:// prefix or a table of files")
    for uri in uris:
        if not base.is_utf8(uri):
            # Every output names a file by its input (the batch id, the ``input`` column): none could hold this name.
            raise InputError(f"{flag} {base.shown(uri)}: {base.NAME_NOT_UTF8}")
    pattern = _compile(speaker_pattern)
    frames, missing, rules, extra, warnings = [], [], {}, [], []
    for uri in uris:
        try:
            files, absent, from_table = _list_one(uri, storage_options, reserved=("input", *reserved_columns), flag=flag)
        except base.CorpusError as error:
            # A folder's messages name the input already ("--audio URI does not exist").
            named = str(error).startswith((f"{flag} {uri}", f"cannot list {flag} {uri}"))
            raise InputError(str(error) if named else f"{flag} {uri}: {error}") from None
        if files.empty and absent.empty:
            # Beside inputs that do list files, an empty one (a wrong or not yet filled folder) would pass unnoticed.
            raise InputError(f"{flag} {uri} lists no audio file; give a folder with .wav/.flac files or a table with a path column")
        # The input as an id (the batch a file without a speaker belongs to, and the output's ``input``):
        # spelled one way, so ``aud``, ``./aud`` and ``aud/`` key the same shards.
        batch_id = _input_id(uri)
        given = files["speaker"].fillna("").astype(str).str.strip() if from_table and "speaker" in files else pd.Series("", index=files.index)
        if (given != "").any():
            rules[uri] = "table"
            blank = given == ""
            if blank.any():
                # A few blank cells must not cost the other files their speakers.
                found = files.loc[blank, "uri"].map(lambda text: _speaker_in(pattern, text)) if pattern is not None else pd.Series(None, index=given.index[blank])
                given[blank] = found.fillna(batch_id)
                matched, rest = int(found.notna().sum()), int(found.isna().sum())
                taken = [f"{matched} took theirs from --speaker-pattern"] if pattern is not None else []
                taken += [f"{rest} are normalised together as the batch {uri}"] if rest else []
                if speakers_matter:
                    warnings.append(f"{int(blank.sum())} file(s) of {uri} have a blank speaker cell; {', '.join(taken)}")
            files["speaker"] = given
        elif pattern is not None:
            rules[uri] = "pattern"
            found = files["uri"].map(lambda text: _speaker_in(pattern, text))
            unmatched = int(found.isna().sum())
            if unmatched == len(files) and len(files):
                raise InputError(f"--speaker-pattern {speaker_pattern!r} matches no file of {uri} (for example {files['uri'].iloc[0]})")
            if unmatched and speakers_matter:
                warnings.append(f"{unmatched} file(s) of {uri} do not match --speaker-pattern; they are normalised together as the batch {uri}")
            files["speaker"] = found.fillna(batch_id)
        else:
            rules[uri] = "batch"
            files["speaker"] = batch_id
        files["input"] = batch_id
        extra += [c for c in files.columns if c not in FIXED_COLUMNS and c not in extra and c != "path"]
        frames.append(files)
        if pattern is not None and len(absent):
            # A file that cannot be read still has a path: its rejection names the speaker the pattern finds there.
            absent = absent.copy()
            blank = absent["speaker"].fillna("").astype(str) == ""
            absent.loc[blank, "speaker"] = absent.loc[blank, "uri"].map(lambda text: _speaker_in(pattern, text) or "")
        missing.append(absent)
    files = pd.concat(frames, ignore_index=True).fillna("")
    twice = files["uri"].duplicated()
    if twice.any():
        warnings.append(f"{int(twice.sum())} file(s) given by more than one {flag} are labelled once")
        files = files[~twice].reset_index(drop=True)
    if files.empty and any(len(absent) for absent in missing):
        absent = next(absent for absent in missing if len(absent))
        raise InputError(
            f"none of the {sum(len(a) for a in missing)} audio file(s) {flag} lists can be read; "
            f"for example {absent['uri'].iloc[0]}: {absent['reason'].iloc[0]}"
        )
    if speakers_matter:
        # 3 and 03 (from one table or two, or a pattern) are two speakers to the model, each normalised by their own recordings.
        warnings += manifest.spelling_warnings(files["speaker"].unique())
    batch = [uri for uri, rule in rules.items() if rule == "batch"]
    if batch and speakers_matter:
        warnings.append(
            f"no speaker for the files of {', '.join(batch)} (no speaker column, no --speaker-pattern): each input is normalised as one "
            "recording batch, which costs accuracy when it mixes speakers (see the README's 'Use the model')"
        )
    missing_frame = pd.concat(missing, ignore_index=True) if missing else pd.DataFrame(columns=MISSING_COLUMNS)
    # A missing file two inputs list is one file that cannot be used, counted and rejected once.
    missing_frame = missing_frame.drop_duplicates("uri").reset_index(drop=True)
    columns = [*FIXED_COLUMNS, *extra]
    return AudioFiles(files=files[columns], missing=missing_frame, speaker_rule=rules, extra_columns=extra, warnings=warnings)


def _input_id(uri: str) -> str:
    """An input as given, spelled one way: a local path absolute and normalised, a URI without a trailing slash."""
    return os.path.normpath(os.path.abspath(uri)) if "://" not in uri else uri.rstrip("/")


def _list_one(uri: str, storage_options: storage.StorageOptions | None, *, reserved: Collection[str], flag: str) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    """One input's files (``uri``, ``fingerprint``, table columns) and missing files, and whether it was a table (which may not bring ``reserved`` columns)."""
    if uri.lower().endswith(TABLE_SUFFIXES):
        files, missing = manifest.list_files(uri, storage_options=storage_options, reserved=reserved)
        files = files.drop(columns=["path"])
        return files, missing.assign(stage="read")[MISSING_COLUMNS], True
    if base.is_audio_like(uri):
        return _one_file(uri, storage_options), pd.DataFrame(columns=MISSING_COLUMNS), False
    if _is_file(uri, storage_options):
        # Walked as a folder, it was reported as "not a folder", which hides what was wrong with it.
        raise base.CorpusError(
            f"{flag} {uri} is a file whose name marks neither audio ({', '.join(base.AUDIO_LIKE_SUFFIXES[:3])} …) nor a table of files ({', '.join(TABLE_SUFFIXES)})"
        )
    # A folder at a time into Arrow: the driver keeps the strings' own bytes,
    # not a Python object per file and path, whose freed fragments stayed in
    # its heap (benchmarks/driver_memory.py).
    chunks, broken = [], []
    for found, dangling in base.walk_audio(uri, storage_options=storage_options, what=flag):
        chunks.append(pa.table({"uri": pa.array([file[0] for file in found], pa.string()), "fingerprint": pa.array([file[2] for file in found], pa.string())}))
        broken += dangling
    files = pa.concat_tables(chunks).sort_by("uri").to_pandas() if chunks else pd.DataFrame(columns=["uri", "fingerprint"], dtype=str)
    missing = pd.DataFrame([{**entry, "speaker": "", "stage": "read"} for entry in sorted(broken, key=lambda entry: entry["uri"])], columns=MISSING_COLUMNS)
    return files, missing, False


def _is_file(uri: str, storage_options: storage.StorageOptions | None) -> bool:
    """Whether ``uri`` is an existing file (not a folder or prefix); an error reaching it is left to the listing to report."""
    try:
        fs, path = storage.filesystem(uri, storage_options=storage_options)
        return bool(fs.isfile(path))
    except Exception:  # storage back-ends raise many kinds; the walk names them
        return False


def _one_file(uri: str, storage_options: storage.StorageOptions | None) -> pd.DataFrame:
    """A single audio file given as an input."""
    try:
        fs, path = storage.filesystem(uri, storage_options=storage_options)
        info = fs.info(path)
    except FileNotFoundError:
        raise base.CorpusError(f"{uri} does not exist") from None
    except Exception as error:  # storage back-ends raise many kinds; name it and stop
        raise base.CorpusError(f"cannot reach {uri}: {storage.describe_error(error)}") from error
    if info.get("type") != "file":
        raise base.CorpusError(f"{uri} is not a file")
    # Named as a folder's listing names it (absolute, for a local file), so
    # the file given both ways is one file, and the shard keys do not depend
    # on the folder the command ran in.
    return pd.DataFrame({"uri": [storage.unstrip(fs, path, uri)], "fingerprint": [base.fingerprint(info)]})


def _compile(speaker_pattern: str | None) -> re.Pattern | None:
    if speaker_pattern is None:
        return None
    try:
        pattern = re.compile(speaker_pattern)
    except re.error as error:
        raise InputError(f"--speaker-pattern {speaker_pattern!r} is not a regular expression: {error}") from None
    if "speaker" not in pattern.groupindex:
        raise InputError(f"--speaker-pattern {speaker_pattern!r} has no group named speaker, as in (?P<speaker>[^/]+)/[^/]+$")
    return pattern


def _speaker_in(pattern: re.Pattern, uri: str) -> str | None:
    match = pattern.search(uri)
    return match["speaker"] if match and match["speaker"] else None
