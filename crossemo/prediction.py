"""Labelling new audio with a model bundle: shards, their part files, and the rows they hold.

``crossemo predict`` writes ``OUT/predictions/part-<shard key>.parquet``, one
row per file: ``uri``, ``speaker``, ``input`` (the ``--audio`` it came
from), the input table's other columns, ``emotion`` (the most probable
class), one ``p_<class>`` column per class of the model (in its
``classes_`` order, rows summing to 1) and ``model_id``. With ``--segment``
it also writes ``OUT/segments/part-<shard key>.parquet``, one row per window
(``uri``, ``start`` and ``end`` in seconds, ``emotion``, the probabilities),
and a file's row holds the mean of its windows' probabilities. Every part
of a folder has the same columns (:func:`align_columns`): a column only some
runs' tables brought is empty in the others' rows.

**A shard's key** is a digest of the model id, the segmentation rule and its
files (URI, listing fingerprint, speaker, carried columns), so a finished
shard is recognised whatever run wrote it. Every part file also records the
files it covers (rejected ones included) and their rejections in its Parquet
metadata: the part is the shard's only output, written last, so a killed run
leaves whole shards or none.

**Re-running.** A part stays valid while its model, rule and every one of its
files the run lists are unchanged (:func:`still_valid`); its files are then
not looked at again. Files no valid part covers are sharded anew; parts no
longer valid are removed once their replacements are written. Parts of files
this run was not given stay, and so do the labels of a replaced part's files
this run was not given, when its model and rule are this run's
(:func:`unlisted_files`). With a method that normalises each speaker by
their own recordings (:func:`normalises_test_speakers`), a shard is one
speaker's files, so adding a recording of a speaker re-labels that speaker
(from the feature cache); otherwise only the new files are labelled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from crossemo import storage

PART_PREFIX = "part-"
REJECTED_FILE = "_rejected.parquet"
FILES_KEY = b"crossemo.files"
REJECTED_KEY = b"crossemo.rejected"
RULE_KEY = b"crossemo.rule"
MAX_SHARD_FILES = 64
"""Files per shard of a method that does not normalise per speaker: small enough to lose little when killed."""

MAX_WAVE_FILES = 4096
"""Files whose extraction and labelling a ``predict`` driver has in hand at once
(see :func:`waves`): large enough that a wave's last tasks idle the cores
only briefly, small enough that one wave's tasks and keys are a small part
of the driver's memory."""

REJECTED_COLUMNS = ["uri", "speaker", "stage", "reason"]


def probability_column(label: str) -> str:
    """The output column of one class's probability: ``p_neutral``."""
    return f"p_{label}"


def normalises_test_speakers(method: object) -> bool:
    """Whether ``method.predict`` normalises each test speaker by their own rows.

    Such a method must see all of a speaker's recordings at once, so
    prediction shards never split a speaker.
    """
    from crossemo.methods._linear import LinearMethod
    from crossemo.methods.dann import DANN
    from crossemo.methods.speaker_norm import SpeakerNorm

    return isinstance(method, (LinearMethod, SpeakerNorm, DANN)) or getattr(method, "scaling", None) == "speaker"


def label(method: object, X: np.ndarray, speakers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's emotion, as the method's ``predict`` gives it, and every class probability.

    The emotion is ``predict``'s, not recomputed from the probabilities, so a
    bundle labels exactly as the evaluated method did (a forest breaks a tie
    between classes its own way).

    Args:
        method: a fitted method.
        X: features, n × d.
        speakers: n speaker ids (whose rows normalise together).

    Returns:
        ``(emotions, probabilities)``: n labels, and n × len(classes_) probabilities.
    """
    emotions = np.asarray(method.predict(X, speakers=speakers)).astype(str)
    return emotions, np.asarray(method.predict_proba(X, speakers=speakers), dtype=np.float64)


def output_columns(classes: list[str]) -> list[str]:
    """The columns ``predict`` adds to each listed file's own: a table of files may not bring columns of these names."""
    return ["emotion", *(probability_column(name) for name in classes), "model_id", "windows"]


def labelled_frame(rows: pd.DataFrame, classes: list[str], emotions: np.ndarray, probabilities: np.ndarray) -> pd.DataFrame:
    """``rows`` with ``emotion`` and one ``p_<class>`` column per class appended."""
    frame = rows.reset_index(drop=True).copy()
    frame["emotion"] = emotions
    for i, name in enumerate(classes):
        frame[probability_column(name)] = probabilities[:, i]
    return frame


def mean_of_windows(windows: pd.DataFrame, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """One file's label from its windows: the mean of their probabilities, and its most probable class."""
    columns = [probability_column(name) for name in classes]
    mean = windows[columns].to_numpy(dtype=np.float64).mean(axis=0)
    return np.asarray(classes)[int(np.argmax(mean))], mean


def labelling_key(loaded: Any) -> str:
    """What a shard's labels depend on besides its files: the model id and the model.json entries that decide the features.

    A bundle's model id covers those entries (:data:`crossemo.bundle.FEATURE_ENTRIES`, sealed),
    except in bundles saved before they were sealed, whose entries can be edited.
    """
    from crossemo.bundle import FEATURE_ENTRIES  # the caller has loaded a bundle: importing it costs nothing more

    entries = {name: loaded.metadata.get(name) for name in FEATURE_ENTRIES}
    return hashlib.sha256(f"{loaded.model_id}\n{json.dumps(entries, sort_keys=True, default=str)}".encode()).hexdigest()


def shard_key(files: pd.DataFrame, *, model_id: str, rule: str) -> str:
    """A shard's identity: the model, the rule and every file's URI, fingerprint, speaker and carried columns."""
    digest = hashlib.sha256(f"{model_id}\n{rule}\n".encode())
    digest.update(files.sort_values("uri").to_csv(index=False).encode())
    return digest.hexdigest()[:24]


def part_file_name(key: str) -> str:
    """The file name of the part (and of its windows) of the shard with this key."""
    return f"{PART_PREFIX}{key}.parquet"


@dataclass(frozen=True)
class Shard:
    """Files labelled by one task, and the part file it writes."""

    key: str
    files: pd.DataFrame

    def part_name(self) -> str:
        return part_file_name(self.key)


def plan_shards(files: pd.DataFrame, *, model_id: str, rule: str, per_speaker: bool, max_files: int = MAX_SHARD_FILES) -> list[Shard]:
    """Cut files into shards: one per speaker when ``per_speaker``, else runs of at most ``max_files`` by URI."""
    files = files.sort_values("uri").reset_index(drop=True)
    if per_speaker:
        groups = [group.reset_index(drop=True) for _, group in files.groupby("speaker", sort=True)]
    else:
        groups = [files.iloc[start:start + max_files].reset_index(drop=True) for start in range(0, len(files), max_files)]
    return [Shard(shard_key(group, model_id=model_id, rule=rule), group) for group in groups]


def waves(shards: Iterable[Shard], *, max_files: int = MAX_WAVE_FILES) -> Iterator[list[Shard]]:
    """Consecutive shards in groups of at most ``max_files`` files (a larger shard is a group of its own).

    The driver extracts and labels one group at a time, so the files' content
    keys, cache locations, task arguments and results it holds are at most
    two groups', whatever the number of files listed. The store's fingerprint
    index is read a batch at a time, keeping the group's rows only; what
    grows with the store is its content index, 37 bytes per cached content
    (:class:`crossemo.contentindex.ContentIndex`).
    """
    wave: list[Shard] = []
    size = 0
    for shard in shards:
        if wave and size + len(shard.files) > max_files:
            yield wave
            wave, size = [], 0
        wave.append(shard)
        size += len(shard.files)
    if wave:
        yield wave


@dataclass(frozen=True)
class Part:
    """A part file already written, as its metadata tells it."""

    uri: str
    key: str
    files: pd.DataFrame
    rejected: pd.DataFrame
    rule: str
    columns: pa.Schema | None = None
    """Its columns and their types (``None`` when not read)."""

    def part_name(self) -> str:
        """Its file name (its windows, under ``segments/``, share it)."""
        return part_file_name(self.key)


def read_parts(folder: str, *, storage_options: storage.StorageOptions | None = None) -> Iterator[Part]:
    """Every part file under ``folder`` with the files it covers (from the Parquet footers only), one at a time.

    Raises:
        storage.StorageError: a part file that cannot be read (:func:`reading_part`).
    """
    for uri in part_uris(folder, storage_options=storage_options):
        name = uri.rsplit("/", 1)[-1]
        with reading_part(uri):  # a JSON that does not parse is a ValueError
            schema = storage.read_schema(uri, storage_options=storage_options)
            metadata = storage.schema_metadata(schema)
            files = pd.DataFrame(json.loads(metadata.get(FILES_KEY.decode(), "[]")))
            rejected = pd.DataFrame(json.loads(metadata.get(REJECTED_KEY.decode(), "[]")), columns=REJECTED_COLUMNS)
        yield Part(uri, name.removeprefix(PART_PREFIX).removesuffix(".parquet"), files, rejected, metadata.get(RULE_KEY.decode(), ""), schema.remove_metadata())


@contextlib.contextmanager
def reading_part(uri: str) -> Iterator[None]:
    """Turn an error reading the part file ``uri`` (labels under ``predictions/``, or their windows under ``segments/``) into one line naming it.

    Raises:
        storage.StorageError: the file cannot be read; the remedy is given when its bytes are at fault (:func:`crossemo.storage.unreadable`).
    """
    try:
        yield
    except storage.PARQUET_READ_ERRORS as error:
        folder = uri.rsplit("/", 2)[-2]
        twin = f"the file of the same name under {'predictions' if folder == 'segments' else 'segments'}/ too, if there is one"
        raise storage.unreadable(f"part file {uri}", error, remedy=f"remove it and {twin}: a run given its files labels them again") from None


def read_part(uri: str, *, storage_options: storage.StorageOptions | None = None) -> pd.DataFrame:
    """A part file's rows (labels or windows); raises as :func:`reading_part`."""
    with reading_part(uri):
        return storage.read_frame(uri, storage_options=storage_options)


def part_schema(uri: str, *, storage_options: storage.StorageOptions | None = None) -> pa.Schema:
    """A part file's columns, without its metadata; raises as :func:`reading_part`."""
    with reading_part(uri):
        return storage.read_schema(uri, storage_options=storage_options).remove_metadata()


def check_windows(folder: str, *, storage_options: storage.StorageOptions | None = None) -> None:
    """Read the footer of every windows file under ``folder`` (``OUT/segments``) before any work; raises as :func:`reading_part`.

    A damaged one would be found only once every file was labelled.
    """
    for uri in part_uris(folder, storage_options=storage_options):
        part_schema(uri, storage_options=storage_options)


def part_uris(folder: str, *, storage_options: storage.StorageOptions | None) -> list[str]:
    """The part files under ``folder``, sorted (not ``_rejected.parquet`` or other files beside them)."""
    return [uri for uri in storage.list_files(folder, suffix=".parquet", storage_options=storage_options) if uri.rsplit("/", 1)[-1].startswith(PART_PREFIX)]


def align_columns(
    folder: str, *, predictions: str, columns: dict[pa.Schema, list[str]] | None = None, storage_options: storage.StorageOptions | None = None,
) -> int:
    """Give every part file under ``folder`` the same columns, so that ``pandas.read_parquet(folder)`` reads them all.

    Arrow takes a folder's columns from one of its files and drops the
    others' extra columns: a table's carried columns, labelled in one run,
    vanished once a folder of other files was labelled into the same
    output. A part lacking a column gets it empty (null); a column two parts
    type differently is widened (whole numbers to floats) or else written
    as text. A part's rows and metadata stay as they are, so whether it is
    still valid does not change; a part whose columns cannot be converted is
    left as it is. So are parts that share a file with another part (a
    killed run's): which of them holds a file's newest label is told by
    when each was written, which rewriting would change.

    Args:
        folder: ``OUT/predictions`` or ``OUT/segments``.
        predictions: ``OUT/predictions``, whose parts' metadata tell which files each covers.
        columns: the part URIs under ``folder`` by their columns, when already read (:attr:`Part.columns`); else read here.
        storage_options: fsspec options for the output.

    Returns:
        how many parts were rewritten.
    """
    if columns is None:
        columns = {}
        for uri in part_uris(folder, storage_options=storage_options):
            columns.setdefault(part_schema(uri, storage_options=storage_options), []).append(uri)
    if len(columns) < 2:
        return 0
    common = _common_schema(list(columns))
    shared = _parts_sharing_files(predictions, storage_options=storage_options)
    rewritten = 0
    for schema, uris in columns.items():
        if schema.equals(common):
            continue
        for uri in uris:
            if uri.rsplit("/", 1)[-1] in shared:
                continue
            with reading_part(uri):
                table = storage.read_table(uri, storage_options=storage_options)
            for name in common.names:
                if name not in table.column_names:
                    table = table.append_column(common.field(name), pa.nulls(len(table), common.field(name).type))
            # pandas' own record of the columns would contradict the new ones.
            kept = {key: value for key, value in (table.schema.metadata or {}).items() if key != b"pandas"}
            try:
                table = table.select(common.names).cast(common.with_metadata(kept))
            except pa.ArrowException:  # a value the common type cannot hold
                continue
            storage.write_table(table, uri, storage_options=storage_options)
            rewritten += 1
    return rewritten


def _parts_sharing_files(predictions: str, *, storage_options: storage.StorageOptions | None) -> set[str]:
    """File names of the parts under ``predictions`` that record a file another part records too."""
    names, digests = [], []
    for part in read_parts(predictions, storage_options=storage_options):
        if "uri" in part.files:
            names.append(part.part_name())
            digests.append(pd.util.hash_array(part.files["uri"].astype(str).to_numpy(dtype=object)))
    if not digests:
        return set()
    owners = np.repeat(np.arange(len(names)), [len(d) for d in digests])
    every = np.concatenate(digests)
    twice = np.isin(every, every[pd.Series(every).duplicated().to_numpy()])
    return {names[i] for i in np.unique(owners[twice])}


def _common_schema(schemas: list[pa.Schema]) -> pa.Schema:
    """Every column of ``schemas``, in the order of the widest, each with a type all its values fit."""
    names = list(dict.fromkeys(name for schema in sorted(schemas, key=len, reverse=True) for name in schema.names))
    fields = []
    for name in names:
        present = [pa.schema([schema.field(name)]) for schema in schemas if name in schema.names]
        try:
            fields.append(pa.unify_schemas(present, promote_options="permissive").field(0))
        except (pa.ArrowTypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
            fields.append(pa.field(name, pa.string()))
    return pa.schema(fields)


def part_metadata(shard: Shard, *, rule: str, rejected: pd.DataFrame) -> dict[str, str]:
    """The metadata a part file carries: the files it covers, their rejections, and the rule."""
    return {
        FILES_KEY.decode(): shard.files.to_json(orient="records"),
        REJECTED_KEY.decode(): rejected[REJECTED_COLUMNS].to_json(orient="records"),
        RULE_KEY.decode(): rule,
    }


def still_valid(parts: Iterable[Part], files: pd.DataFrame, *, model_id: str, rule: str, per_speaker: bool) -> tuple[list[Part], list[Part]]:
    """Split earlier parts into those still valid for ``files`` and those to remove.

    A part is valid when its key is what its recorded files are keyed by now
    (same model and rule), it has the columns ``files`` has, each of its
    files that ``files`` lists is listed unchanged (fingerprint, speaker,
    carried columns), none of them is one it could not read (tried again),
    and, when ``per_speaker``, no listed file of its speaker is outside it.
    Its files a run does not list keep their labels in it: a run given part
    of a folder, or a folder a file was removed from, reuses the part rather
    than labelling the rest again or losing them. Valid parts that share a file (left by a killed run) are stale. A
    part none of whose files is listed is neither: a run labels the files it
    is given, and the labels of files given to earlier runs stay (a daily
    ``--audio today/`` adds to the output).
    """
    current = files.set_index("uri", drop=False)
    valid, stale = [], []
    for part in parts:
        if part.files.empty:  # a part that records no files cannot be checked
            stale.append(part)
            continue
        listed = part.files["uri"].isin(current.index)
        if not listed.any():
            continue
        given = part.files[listed].reset_index(drop=True)
        ok = part.rule == rule and set(part.files.columns) == set(current.columns) and shard_key(part.files, model_id=model_id, rule=rule) == part.key
        if ok:
            now = current.loc[given["uri"], part.files.columns].reset_index(drop=True)
            ok = now.astype(str).equals(given.astype(str))
        if ok:
            # A listed file it could not read (a storage hiccup, a permission
            # since fixed: its fingerprint is unchanged) is tried again, not
            # rejected for good; a file that cannot be decoded stays rejected.
            ok = not part.rejected.loc[part.rejected["stage"] == "read", "uri"].isin(current.index).any()
        if ok and per_speaker:
            speakers = set(part.files["speaker"])
            ok = len(speakers) == 1 and (files["speaker"] == next(iter(speakers))).sum() == len(given)
        (valid if ok else stale).append(part)
    # A run killed between writing a part and removing the one it replaced
    # leaves both; when both hold up for this listing, neither is kept, so a
    # file never has two rows.
    claims = pd.concat([part.files["uri"] for part in valid]) if valid else pd.Series(dtype=str)
    twice = set(claims[claims.duplicated()])
    shared = [bool(part.files["uri"].isin(twice).any()) for part in valid]
    return [part for part, overlaps in zip(valid, shared) if not overlaps], stale + [part for part, overlaps in zip(valid, shared) if overlaps]


def unlisted_files(part: Part, files: pd.DataFrame, *, model_id: str, rule: str, exclude: set[str]) -> pd.DataFrame:
    """A part being replaced: its recorded files that ``files`` does not list and ``exclude`` does not hold.

    Their labels are kept (:func:`crossemo.orchestration.label_files` moves
    them to a part of their own), but only when they are what this run would
    give: the part's model and rule are this run's. A part replaced for
    another model or rule keeps nothing: what a run replaces never leaves
    another model's labels behind (the summary counts those dropped).

    Returns:
        the rows as the part recorded them (empty when nothing is kept).
    """
    if part.files.empty or part.rule != rule or shard_key(part.files, model_id=model_id, rule=rule) != part.key:
        return part.files.iloc[:0]
    return part.files[~part.files["uri"].isin(files["uri"]) & ~part.files["uri"].isin(exclude)].reset_index(drop=True)


WHOLE_FILES = "whole files"
"""The rule of a run without ``--segment``: each file is one utterance."""


@dataclass(frozen=True)
class Segmentation:
    """How ``--segment`` cuts files: ``mode`` a window length in seconds or ``"speech"``; see :mod:`crossemo.segments`."""

    mode: Any
    hop: float | None = None
    max_length: float = 10.0

    def rule(self) -> str:
        """The rule in one line (raises ``ValueError`` for a bad mode, hop or maximum length)."""
        from crossemo import segments

        return segments.describe_rule(self.mode, hop=self.hop, max_length=self.max_length)


WINDOW_COLUMNS = ["start", "end", "reason"]
"""A window cache entry's columns besides the features (``reason`` empty for a usable window)."""


def window_cache_uri(store: Any, generation: Any, file_sha256: str, rule: str) -> str:
    """Where one file's windows and their features are cached: keyed by its content, the segmentation rule and the cache generation."""
    key = hashlib.sha256(f"{file_sha256}\n{rule}".encode()).hexdigest()[:32]
    return storage.join(store.out, "cache", "segments", generation.feature_set_id, generation.id, f"{key}.parquet")


def file_windows(
    uri: str, *, mode: Any, hop: float | None, max_length: float, rule: str, store: Any, generation: Any, extractor: Any, settings: Any,
    storage_options: storage.StorageOptions | None = None,
) -> pd.DataFrame:
    """One file's windows with their features (NaN for a rejected window), from the cache or computed and cached.

    Memory is bounded by a window: the file is hashed and decoded block by
    block (:mod:`crossemo.segments`); only the windows' features are kept.

    Returns:
        ``start``, ``end`` (seconds), ``reason`` (``""`` when usable), then the feature columns.

    Raises:
        OSError: the file cannot be read.
        crossemo.audio.AudioError: it cannot be opened as audio.
    """
    from crossemo import segments
    from crossemo.features.extractor import FeatureError

    file_sha = segments.stream_digest(uri, storage_options=storage_options)
    cached = window_cache_uri(store, generation, file_sha, rule)
    if storage.exists(cached, storage_options=store.storage_options):
        return storage.read_frame(cached, storage_options=store.storage_options)
    rows, vectors = [], []
    blank = np.full(len(extractor.names), np.nan, dtype=np.float32)
    for segment in segments.iter_segments(uri, mode=mode, hop=hop, max_length=max_length, settings=settings, storage_options=storage_options):
        reason = segment.reason
        vector = blank
        if segment.analysis is not None:
            try:
                vector = np.asarray(extractor.extract(segment.analysis.signal, segment.analysis.sampling_rate), dtype=np.float32)
            except FeatureError as error:
                reason = str(error)
        rows.append({"start": segment.window.start, "end": segment.window.end, "reason": reason})
        vectors.append(vector)
    matrix = np.vstack(vectors) if vectors else np.empty((0, len(extractor.names)), dtype=np.float32)
    frame = pd.concat([pd.DataFrame(rows, columns=WINDOW_COLUMNS), pd.DataFrame(matrix, columns=list(extractor.names))], axis=1)
    storage.write_frame(frame, cached, storage_options=store.storage_options)
    return frame


def no_window_reason(windows: pd.DataFrame, mode: Any) -> str:
    """Why a file gave no usable window."""
    if windows.empty:
        return "no speech found" if mode == "speech" else "no window"
    return f"no usable window ({len(windows)} rejected; the first: {windows['reason'].iloc[0]})"
