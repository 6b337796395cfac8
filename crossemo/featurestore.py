"""The feature store: openSMILE functionals per utterance, cached by audio content.

Layout below an output URI ``<out>`` (a local folder or ``s3://…``)::

    <out>/features/<corpus>.parquet      one row per utterance: corpus, speaker, emotion, uri, features…
    <out>/features/_manifest.parquet     every utterance: corpus label, fingerprint, sha256, original rate, channels, notes
    <out>/features/_rejected.parquet     every file not turned into a row: uri, corpus, stage, reason
    <out>/features/_duplicates.parquet   every file whose content another file repeats, and what was done
    <out>/cache/features/<set id>/<generation>/*.parquet   extracted shards: sha256, audio facts, a features vector
    <out>/cache/fingerprints.parquet      uri + size/mtime fingerprint -> sha256 of the bytes

The cache is keyed by the SHA-256 of the audio bytes and by the **cache
generation**: a digest of everything else a feature row depends on (the
feature set's definition, the openSMILE version, every decode rule with its
parameters, such as the analysis rate and the channel rule; see
:class:`CacheGeneration`). So a re-run extracts nothing again, a renamed or
copied file is not extracted twice (within a run, identical content is
extracted once, whichever shards hold its copies), adding files extracts only
the new ones, and a changed rule or upgraded openSMILE never reuses old
features. The fingerprint index lets a warm run find the content key of an
unchanged file without reading its audio.

**Duplicates** (:func:`find_duplicates`): files with identical bytes are one
recording. Within a corpus, copies with the same speaker and emotion are
kept once (the one with the shortest URI, so an original is kept rather
than its "… copy"; the others are rejected, naming it); copies
whose speaker or emotion differ are all rejected, naming their twins, since
no label can be trusted and one recording must never sit on both sides of a
held-out-speaker split. Across corpora, a recording that is in the target is
left out of the source of that pair (:mod:`crossemo.protocol`).

**Cache files** hold each content's features as one ``features`` column of
fixed-size float32 vectors, their names in the file's metadata
(:data:`FEATURE_NAMES_KEY`), not as a column per feature: a shard of 64 files
with a column per IS10 feature takes about six times as long to write and
eight times as long to read, and a run writes one such file per shard and
reads them all again. Files of the older layout (a column per feature) are
read as well.

Everything here runs without Ray; :mod:`crossemo.orchestration` schedules
:func:`extract_shard` on a cluster.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import time
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import opensmile
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from crossemo import audio, storage
from crossemo.contentindex import REJECTION_SUFFIX, ContentIndex
from crossemo.corpora import Manifest
from crossemo.features import FeatureError, FeatureExtractor
from crossemo.labels import METADATA_COLUMNS

REJECTED_COLUMNS = ["uri", "corpus", "stage", "reason"]
DUPLICATE_COLUMNS = ["group", "sha256", "corpus", "speaker", "emotion", "uri", "action"]
AUDIO_COLUMNS = ["sampling_rate", "channels", "channel", "duration", "decode_notes"]
"""What the cache keeps about each content besides its features; copied into ``_manifest.parquet``."""
FEATURE_SET_KEY = "crossemo.feature_set"
GENERATION_KEY = "crossemo.cache_generation"
GENERATION_RECORD_KEY = "crossemo.cache_generation_record"
"""Parquet metadata holding :meth:`CacheGeneration.describe` as JSON, so ``crossemo evaluate`` records the decode rules the features were made with."""
FEATURE_NAMES_KEY = "crossemo.feature_names"
"""Parquet metadata of a cache file: the names of its ``features`` vectors' elements, in order, as JSON."""


@dataclass(frozen=True)
class CacheGeneration:
    """Everything a feature row depends on besides the audio bytes.

    Attributes:
        feature_set_id: the feature set (a built-in name, or the digest of a custom config's adapted text).
        opensmile_version: the installed ``opensmile`` package, which ships
            the openSMILE library and the built-in configs.
        decode: the decode rules (:meth:`crossemo.audio.AnalysisSettings.key`).
    """

    feature_set_id: str
    opensmile_version: str
    decode: dict = field(hash=False)

    @classmethod
    def of(cls, extractor: FeatureExtractor, settings: audio.AnalysisSettings) -> CacheGeneration:
        """The generation of features made by ``extractor`` from signals made by ``settings``, in this process."""
        return cls(extractor.feature_set_id, opensmile.__version__, settings.key())

    @property
    def id(self) -> str:
        """16 hex digits naming the generation in cache paths and run records."""
        payload = json.dumps({"feature_set": self.feature_set_id, "opensmile": self.opensmile_version, "decode": self.decode}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def describe(self) -> dict:
        """The generation as plain data, for the run record."""
        return {"id": self.id, "feature_set": self.feature_set_id, "opensmile": self.opensmile_version, "decode": self.decode}


@dataclass(frozen=True)
class FeatureStore:
    """Where features live below an output URI.

    Args:
        out: local folder or object-store prefix.
        storage_options: filesystem options for ``out``.
    """

    out: str
    storage_options: storage.StorageOptions | None = None

    @property
    def features_uri(self) -> str:
        return storage.join(self.out, "features")

    def cache_uri(self, generation: CacheGeneration) -> str:
        return storage.join(self.out, "cache", "features", generation.feature_set_id, generation.id)

    @property
    def fingerprints_uri(self) -> str:
        return storage.join(self.out, "cache", "fingerprints.parquet")


@dataclass
class ShardOutcome:
    """What one extraction task did.

    Attributes:
        keys: per input file ``uri``, ``fingerprint``, ``sha256`` (empty when unreadable).
        rejected: per file that gave no features, ``uri``, ``sha256``, ``stage``, ``reason``.
        extracted: number of files openSMILE processed.
        cpu_seconds: CPU seconds of the whole task.
        cache_tables: the cache files written, by URI, as a reader of them
            would get them (for :meth:`FeatureCache.add`: the driver need not read them back).
    """

    keys: pd.DataFrame
    rejected: pd.DataFrame
    extracted: int
    cpu_seconds: float
    cache_tables: dict[str, pa.Table] = field(default_factory=dict)


def content_key(data: bytes) -> str:
    """The cache key of an audio file: SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()


CLAIM_BATCH_FILES = 16
"""Files whose content keys one claims round trip asks for (:func:`extract_shard`)."""
CLAIM_BATCH_BYTES = 64 * 2**20
"""The most bytes of audio a shard holds while waiting to claim them; a larger file is a batch of its own."""


def extract_shard(
    files: pd.DataFrame,
    *,
    extractor: FeatureExtractor,
    store: FeatureStore,
    settings: audio.AnalysisSettings | None = None,
    generation: CacheGeneration | None = None,
    cached: Container[str] = frozenset(),
    claim: Callable[[list[str]], list[bool]] | None = None,
    storage_options: storage.StorageOptions | None = None,
) -> ShardOutcome:
    """Extract features for a shard of files and write them to the cache.

    A file whose content is already in ``cached``, or is claimed by another
    shard, is hashed but not processed again. Unreadable, undecodable or
    degenerate files are rejected with their reason; the shard goes on.

    Args:
        files: ``uri`` and ``fingerprint`` per file, and optionally
            ``may_repeat``: whether a file of another shard could have the
            same content (only those are claimed; every file when absent).
        extractor: the feature set, built once where its config is readable
            (a custom config travels inside it to every worker).
        store: the feature store to write the cache shard to.
        settings: the decode rules (the defaults when ``None``).
        generation: the cache generation to write to; computed here from
            ``extractor`` and ``settings`` when ``None`` (a driver passes its
            own, so every worker writes where the driver reads).
        cached: content keys already in the cache.
        claim: asks, for a list of content keys, whether this shard is the
            one to extract each (true for exactly one shard per key in a run);
            every new key is this shard's when ``None``. Files are claimed in
            batches of up to :data:`CLAIM_BATCH_FILES` files or
            :data:`CLAIM_BATCH_BYTES` bytes, read and held until claimed.
        storage_options: filesystem options for reading the audio (default: the store's).

    Returns:
        the shard's outcome; the features themselves go to the cache.
    """
    started = time.process_time()
    settings = settings or audio.AnalysisSettings()
    generation = generation or CacheGeneration.of(extractor, settings)
    key_rows, rejected, vectors, facts = [], [], [], []
    handled: set[str] = set()  # contents this shard extracted or rejected
    may_repeat = files["may_repeat"] if "may_repeat" in files else pd.Series(True, index=files.index)
    read: list[tuple[str, bytes, str, bool]] = []  # files read and hashed, not yet extracted: uri, bytes, key, may repeat

    def extract_read() -> None:
        """Claim the batch's new keys in one round trip to the claims actor, then extract what this shard owns."""
        asked = list(dict.fromkeys(sha for _, _, sha, repeatable in read if repeatable and sha not in cached and sha not in handled))
        owned = {sha for sha, mine in zip(asked, claim(asked)) if mine} if claim is not None and asked else set(asked)
        for uri, data, sha, repeatable in read:
            if sha in cached or sha in handled or (claim is not None and repeatable and sha not in owned):
                continue
            handled.add(sha)
            try:
                analysis = audio.prepare(data, settings=settings)
                vectors.append(extractor.extract(analysis.signal, analysis.sampling_rate))
                facts.append({
                    "sha256": sha, "sampling_rate": analysis.original_rate, "channels": analysis.channels, "channel": analysis.channel,
                    "duration": analysis.duration, "decode_notes": "; ".join(analysis.notes),
                })
            except audio.AudioError as error:
                rejected.append({"uri": uri, "sha256": sha, "stage": "decode", "reason": str(error)})
            except FeatureError as error:
                rejected.append({"uri": uri, "sha256": sha, "stage": "features", "reason": str(error)})
        read.clear()

    for uri, fingerprint, repeatable in zip(files["uri"], files["fingerprint"], may_repeat):
        try:
            data = audio.read(uri, storage_options=storage_options if storage_options is not None else store.storage_options)
        except OSError as error:
            key_rows.append({"uri": uri, "fingerprint": fingerprint, "sha256": ""})
            rejected.append({"uri": uri, "sha256": "", "stage": "read", "reason": storage.describe_error(error)})
            continue
        sha = content_key(data)
        key_rows.append({"uri": uri, "fingerprint": fingerprint, "sha256": sha})
        read.append((uri, data, sha, bool(repeatable)))
        # Without claims, one file at a time; with them, a batch per round trip
        # (one per file cost a quarter of the wall time on files of one size).
        if claim is None or len(read) >= CLAIM_BATCH_FILES or sum(len(entry[1]) for entry in read) >= CLAIM_BATCH_BYTES:
            extract_read()
    extract_read()
    rejected_frame = pd.DataFrame(rejected, columns=["uri", "sha256", "stage", "reason"])
    written: dict[str, pa.Table] = {}
    if facts or len(rejected_frame):
        written = write_cache_shard(store, generation, extractor.names, pd.DataFrame(facts, columns=["sha256", *AUDIO_COLUMNS]), vectors, rejected_frame)
    return ShardOutcome(
        keys=pd.DataFrame(key_rows, columns=["uri", "fingerprint", "sha256"]),
        rejected=rejected_frame,
        extracted=len(facts),
        cpu_seconds=time.process_time() - started,
        cache_tables=written,
    )


def write_cache_shard(
    store: FeatureStore, generation: CacheGeneration, names: list[str], facts: pd.DataFrame, vectors: list[np.ndarray], rejected: pd.DataFrame,
) -> dict[str, pa.Table]:
    """Write one cache shard: audio facts and features by content key, plus decode/feature rejections.

    Read failures are not cached (they may be transient); content that could
    not be decoded or gave non-finite features is, since the same bytes fail
    the same way under the same generation.

    Args:
        store: the feature store.
        generation: the cache generation to write to.
        names: the feature names, in the order of each vector.
        facts: ``sha256`` and ``AUDIO_COLUMNS``, one row per vector.
        vectors: one feature vector per row of ``facts``.
        rejected: ``uri, sha256, stage, reason`` per file that gave no features.

    Returns:
        the tables written, by URI.
    """
    matrix = np.vstack(vectors).astype(np.float32) if vectors else np.empty((0, len(names)), dtype=np.float32)
    kept = rejected[rejected["stage"] != "read"].drop(columns=["uri"]).drop_duplicates("sha256")
    digest = hashlib.sha256("".join(sorted(list(facts["sha256"]) + list(kept["sha256"]))).encode()).hexdigest()[:24]
    base = storage.join(store.cache_uri(generation), digest)
    metadata = {FEATURE_SET_KEY: generation.feature_set_id, GENERATION_KEY: generation.id}
    tables: dict[str, pa.Table] = {}
    if len(facts):
        table = storage.frame_table(facts.reset_index(drop=True), metadata={**metadata, FEATURE_NAMES_KEY: json.dumps(names)})
        tables[f"{base}.parquet"] = table.append_column("features", pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), len(names)))
    if len(kept):
        tables[f"{base}{REJECTION_SUFFIX}"] = storage.frame_table(kept.reset_index(drop=True), metadata=metadata)
    for uri, table in tables.items():
        storage.write_table(table, uri, storage_options=store.storage_options)
    return tables


class FeatureCache:
    """One cache generation as a run sees it: which contents it holds, and the features it has read so far.

    Every cache file is opened once: :meth:`scan` reads each file's content
    keys, and reads the whole file at once when it holds a content the run
    already knows it needs (a re-run needs every file); :meth:`contents` reads
    only the files still needed, and tables a run has just written come in
    through :meth:`add` without being read back.

    Args:
        store: the feature store.
        generation: the cache generation.
        names: the feature names, in the order the caller wants the values.
    """

    def __init__(self, store: FeatureStore, generation: CacheGeneration, names: list[str]) -> None:
        self.store = store
        self.generation = generation
        self.names = list(names)
        self._index = ContentIndex()  # every content key known, and its cache file
        self._unread: set[str] = set()  # cache files not read whole yet
        self._facts: list[pd.DataFrame] = []
        self._values: list[np.ndarray] = []
        self._rejections: list[pd.DataFrame] = []

    @classmethod
    def scan(cls, store: FeatureStore, generation: CacheGeneration, names: list[str], *, needed: frozenset[str] = frozenset()) -> FeatureCache:
        """List the cache of ``generation``, reading whole every file that holds a key in ``needed``.

        Raises:
            ValueError: a cache file's features are named otherwise than ``names``.
        """
        cache = cls(store, generation, names)
        for uri in storage.list_files(store.cache_uri(generation), suffix=".parquet", storage_options=store.storage_options):
            # One thread: Arrow's decoding threads each keep a heap of their own,
            # which the driver's memory would keep once a wave has used it.
            try:
                with storage.open_parquet(uri, storage_options=store.storage_options) as parquet:
                    keys = parquet.read(columns=["sha256"], use_threads=False).column("sha256").to_pylist()
                    if not needed.isdisjoint(keys):
                        cache.add(uri, parquet.read(use_threads=False))
                    else:
                        cache.note(uri, keys)
            except storage.PARQUET_READ_ERRORS as error:  # damaged, not a cache file (no sha256 column), or out of reach
                raise _unreadable_cache_file(uri, error) from None
        return cache

    @property
    def keys(self) -> ContentIndex:
        """Content keys with features or a cached rejection (``key in cache.keys``, :meth:`ContentIndex.contains`)."""
        return self._index

    def note(self, uri: str, keys: Iterable[str]) -> None:
        """Take in that the cache file at ``uri`` holds ``keys``, leaving its contents to be read when needed."""
        self._index.add(uri, keys)
        self._unread.add(uri)

    def locate(self, keys: Sequence[str]) -> list[str]:
        """The cache file holding each content key: its features, else its rejection; ``""`` where none does.

        Tasks that read their own features (labelling) get these, so the
        driver reads no features at all.
        """
        return self._index.locate(keys)

    def add(self, uri: str, table: pa.Table) -> None:
        """Take in the contents of the cache file at ``uri``.

        Raises:
            ValueError: its features are named otherwise than :attr:`names`.
        """
        if uri in self._unread:
            self._unread.discard(uri)
        else:
            self._index.add(uri, table.column("sha256").to_pylist())
        if uri.endswith(REJECTION_SUFFIX):
            self._rejections.append(table.to_pandas())
        elif "features" in table.column_names:
            stored = json.loads((table.schema.metadata or {}).get(FEATURE_NAMES_KEY.encode(), b"[]"))
            if stored != self.names:
                raise ValueError(f"cache file {uri} holds {len(stored)} features other than the {len(self.names)} of {self.generation.feature_set_id}; remove it")
            self._facts.append(table.drop_columns(["features"]).to_pandas())
            vectors = table.column("features").combine_chunks()
            self._values.append(vectors.flatten().to_numpy().reshape(len(vectors), len(self.names)))
        else:  # the older layout: a column per feature
            frame = table.to_pandas()
            self._facts.append(frame[["sha256", *AUDIO_COLUMNS]])
            self._values.append(frame[self.names].to_numpy(dtype=np.float32))

    def contents(self, wanted: set[str]) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
        """Audio facts and features, and cached rejections, of the content keys in ``wanted`` (reading the files still needed).

        Returns:
            ``(facts, values, rejections)``: ``AUDIO_COLUMNS`` indexed by
            ``sha256``, one row per content with features; float32 values of
            shape ``(len(facts), len(names))`` in the same row order; and
            ``sha256, stage, reason`` per content rejected.
        """
        for uri in sorted(self._index.files_holding(wanted) & self._unread):
            try:
                table = storage.read_table(uri, storage_options=self.store.storage_options)
            except storage.PARQUET_READ_ERRORS as error:
                raise _unreadable_cache_file(uri, error) from None
            self.add(uri, table)
        facts = pd.concat(self._facts, ignore_index=True) if self._facts else pd.DataFrame(columns=["sha256", *AUDIO_COLUMNS])
        values = np.concatenate(self._values) if self._values else np.empty((0, len(self.names)), dtype=np.float32)
        rows = np.flatnonzero(facts["sha256"].isin(wanted).to_numpy() & ~facts["sha256"].duplicated().to_numpy())
        rejections = pd.concat(self._rejections) if self._rejections else pd.DataFrame(columns=["sha256", "stage", "reason"])
        rejections = rejections[rejections["sha256"].isin(wanted)].drop_duplicates("sha256")
        return facts.iloc[rows].set_index("sha256"), values[rows], rejections


def _unreadable_cache_file(uri: str, error: BaseException) -> storage.StorageError:
    return storage.unreadable(f"cache file {uri}", error, remedy="remove it: the recordings it held are extracted again")


FINGERPRINT_COLUMNS = ["uri", "fingerprint", "sha256"]
FINGERPRINT_SCHEMA = pa.schema([(name, pa.string()) for name in FINGERPRINT_COLUMNS])
"""The index's columns as read and written (an index written through pandas, as before, holds ``large_string``)."""
FINGERPRINT_BATCH_ROWS = 4096
"""Rows of the fingerprint index read (and written, one row group each) at a time: a lookup holds one batch and its
matches, not the index. As small as a ``predict`` wave (:data:`crossemo.prediction.MAX_WAVE_FILES`), so a store
that outgrows one batch no longer raises the driver's peak (``benchmarks/driver_memory.py``)."""


def _fingerprint_batches(store: FeatureStore) -> Iterator[pa.RecordBatch]:
    """The fingerprint index, batch by batch (nothing when there is none yet)."""
    if not storage.exists(store.fingerprints_uri, storage_options=store.storage_options):
        return
    try:
        with storage.open_parquet(store.fingerprints_uri, storage_options=store.storage_options) as parquet:
            # One thread, as in FeatureCache.scan: the index is read once a wave.
            for batch in parquet.iter_batches(batch_size=FINGERPRINT_BATCH_ROWS, columns=FINGERPRINT_COLUMNS, use_threads=False):
                yield batch.cast(FINGERPRINT_SCHEMA)
    except storage.PARQUET_READ_ERRORS as error:
        # Only a shortcut (which content a listed file holds) is lost with it.
        raise storage.unreadable(f"the store's fingerprint index {store.fingerprints_uri}", error, remedy="remove it: the files are hashed again") from None


def _index_rows(store: FeatureStore, uris: pd.Series) -> pd.DataFrame:
    """The fingerprint index's rows for ``uris``, read a batch at a time."""
    wanted = pa.array(uris.drop_duplicates().astype(str), type=pa.string())
    found = [batch.filter(pc.is_in(batch.column("uri"), value_set=wanted)) for batch in _fingerprint_batches(store)]
    rows = [batch for batch in found if batch.num_rows]
    return pa.Table.from_batches(rows).to_pandas() if rows else pd.DataFrame(columns=FINGERPRINT_COLUMNS)


def known_keys(store: FeatureStore, utterances: pd.DataFrame) -> pd.Series:
    """Content keys of unchanged files from the fingerprint index (``""`` where unknown).

    The index is read a batch at a time and only the rows of these files are
    kept, so memory follows the number of files asked about, not the store.
    """
    index = _index_rows(store, utterances["uri"]).drop_duplicates(["uri", "fingerprint"], keep="last")
    merged = utterances[["uri", "fingerprint"]].merge(index, on=["uri", "fingerprint"], how="left")
    return pd.Series(merged["sha256"].fillna("").to_numpy(), index=utterances.index)


def update_fingerprints(store: FeatureStore, keys: pd.DataFrame) -> None:
    """Merge newly learned ``uri, fingerprint -> sha256`` into the index (left as it is when nothing is new).

    The index is copied a batch at a time, the learned rows replacing those of
    the same file and fingerprint and going last, so memory follows the
    number of rows learned, not the store.
    """
    keys = keys.loc[keys["sha256"] != "", FINGERPRINT_COLUMNS].drop_duplicates(["uri", "fingerprint"], keep="last")
    keys = keys[known_keys(store, keys).to_numpy() != keys["sha256"].to_numpy()]
    if keys.empty:
        return
    learned = pa.array((keys["uri"] + "\n" + keys["fingerprint"].astype(str)).to_numpy(str), type=pa.string())

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in _fingerprint_batches(store):
            pairs = pc.binary_join_element_wise(batch.column("uri"), batch.column("fingerprint"), "\n")
            yield batch.filter(pc.invert(pc.is_in(pairs, value_set=learned)))
        new = pa.Table.from_pandas(keys.sort_values("uri").reset_index(drop=True), preserve_index=False)
        yield from new.cast(FINGERPRINT_SCHEMA).to_batches(FINGERPRINT_BATCH_ROWS)

    storage.write_batches(batches(), FINGERPRINT_SCHEMA, store.fingerprints_uri, storage_options=store.storage_options)


def file_sizes(fingerprints: pd.Series) -> pd.Series:
    """Each file's size in bytes, from its fingerprint (size first, see :func:`crossemo.corpora.base.fingerprint`); NaN where the listing gave none."""
    return pd.to_numeric(fingerprints.astype(str).str.split(":").str[0], errors="coerce")


def shard(frame: pd.DataFrame, *, workers: int, max_size: int = 64) -> list[pd.DataFrame]:
    """Split files into shards that keep ``workers`` busy to the end, largest files first.

    Files go largest first (their size is the estimate of their cost; files
    of unknown size count as the median), and each shard takes about
    ``1 / (2 × workers)`` of the bytes not yet given out, at most ``max_size``
    files (a shard lost to a dead worker costs little): shards start large,
    for few round trips and few cache files, and shrink towards the end, so
    when a worker runs out of work the others finish within a small shard's
    time. Files of equal size, the only ones that can hold the same content,
    stay in one shard when the rest of their group is no larger than the
    shard (a pair of copies always does; a corpus of equally long WAV files
    is still spread), and that shard then finds the copies itself.

    Args:
        frame: one row per file, with ``uri`` and ``fingerprint``.
        workers: the CPUs the shards run on.
        max_size: the most files in one shard.

    Returns:
        the shards, in the order to run them, each with column ``may_repeat``:
        whether another shard could hold the same content (a file of unknown
        size, or of a size found in another shard).
    """
    if frame.empty:
        return []
    known = file_sizes(frame["fingerprint"])
    cost = known.fillna(known.median() if known.notna().any() else 1.0).to_numpy(dtype=float)
    order = np.lexsort((frame["uri"].to_numpy(), -cost))
    frame, sizes, cost = frame.iloc[order].reset_index(drop=True), known.to_numpy(dtype=float)[order], cost[order]
    bounds, start, remaining = [], 0, cost.sum()
    while start < len(frame):
        end, taken, target = start + 1, cost[start], remaining / (2 * max(workers, 1))
        while end < len(frame) and end - start < max_size and taken < target:
            taken += cost[end]
            end += 1
        group_end = end
        while group_end < len(frame) and sizes[group_end] == sizes[end - 1]:
            group_end += 1
        if group_end - end <= end - start and group_end - start <= max_size:
            taken += cost[end:group_end].sum()
            end = group_end
        bounds.append((start, end))
        remaining -= taken
        start = end
    number = pd.Series(np.concatenate([np.full(end - start, index) for index, (start, end) in enumerate(bounds)]))
    frame["may_repeat"] = np.isnan(sizes) | (number.groupby(sizes).transform("nunique") > 1).to_numpy()
    return [frame.iloc[start:end].reset_index(drop=True) for start, end in bounds]


@dataclass
class Assembled:
    """What :func:`assemble` wrote under ``<out>/features/``.

    Attributes:
        features: the feature table per corpus.
        rejected: every file not used (``REJECTED_COLUMNS``).
        duplicates: every file whose content another file repeats (``DUPLICATE_COLUMNS``).
        utterances: the manifest as written, with content keys and audio facts.
        warnings: what a user should know about the audio, one line each.
    """

    features: dict[str, pd.DataFrame]
    rejected: pd.DataFrame
    duplicates: pd.DataFrame
    utterances: pd.DataFrame
    warnings: list[str]


def assemble(
    cache: FeatureCache, manifests: list[Manifest], extractor: FeatureExtractor, keys: pd.DataFrame, read_failures: pd.DataFrame, *, write: bool = True,
) -> Assembled:
    """Build, and write to ``<out>/features/``, one table per corpus, the manifest, the rejections and the duplicates.

    Args:
        cache: the cache of the generation the features come from, with
            everything this run wrote to it (see :meth:`FeatureCache.add`).
        manifests: the corpora of this run.
        extractor: the feature set used.
        keys: ``uri -> sha256`` for every readable utterance.
        read_failures: files that could not be read this run (``uri``, ``stage``, ``reason``).
        write: write ``<out>/features/`` (replacing what an earlier run left
            there); without, the tables are only returned (``crossemo train``
            must not replace an evaluation's feature store with its corpora).

    Returns:
        what was built.
    """
    store, generation = cache.store, cache.generation
    utterances = pd.concat([m.utterances for m in manifests], ignore_index=True)
    utterances = utterances.merge(keys[["uri", "sha256"]].drop_duplicates("uri"), on="uri", how="left")
    utterances["sha256"] = utterances["sha256"].fillna("")
    cached, values, cached_rejections = cache.contents(set(utterances["sha256"]) - {""})
    utterances = utterances.join(cached[AUDIO_COLUMNS], on="sha256")
    rejected = [m.skipped.assign(stage="recipe") for m in manifests if len(m.skipped)]
    if len(read_failures):
        rejected.append(read_failures.merge(utterances[["uri", "corpus"]], on="uri"))
    if len(cached_rejections):
        bad = utterances.merge(cached_rejections, on="sha256")
        rejected.append(bad[["uri", "corpus", "stage", "reason"]])
    usable = utterances[utterances["sha256"].isin(cached.index)]
    duplicates, copies = find_duplicates(usable)
    rejected.append(copies)
    rejected_frame = pd.concat([r for r in rejected if len(r)], ignore_index=True)[REJECTED_COLUMNS] if any(len(r) for r in rejected) else pd.DataFrame(columns=REJECTED_COLUMNS)
    metadata = {FEATURE_SET_KEY: extractor.feature_set_id, GENERATION_KEY: generation.id, GENERATION_RECORD_KEY: json.dumps(generation.describe(), default=str)}
    written: dict[str, pd.DataFrame] = {}
    kept = usable[~usable["uri"].isin(copies["uri"])]
    for manifest in manifests:
        rows = kept[kept["corpus"] == manifest.corpus]
        rows_values = values[cached.index.get_indexer(rows["sha256"])]
        frame = pd.concat([rows[list(METADATA_COLUMNS)].reset_index(drop=True), pd.DataFrame(rows_values, columns=cache.names)], axis=1)
        written[manifest.corpus] = frame
    stale = []
    if write:
        tables = {**{f"{name}.parquet": frame for name, frame in written.items()}, "_manifest.parquet": utterances,
                  "_rejected.parquet": rejected_frame.reset_index(drop=True), "_duplicates.parquet": duplicates}
        for name, frame in tables.items():
            storage.write_frame(frame, storage.join(store.features_uri, name), storage_options=store.storage_options, metadata=metadata)
        stale = remove_stale_tables(store, set(written))
    warnings = [f"removed features/{name}.parquet, left by an earlier run with other corpora (its features stay in the cache)" for name in stale]
    warnings += audio_warnings(kept, duplicates, analysis_rate=int(generation.decode.get("analysis_rate", 0)), written=write)
    return Assembled(written, rejected_frame, duplicates, utterances, warnings)


def store_folder_holding(uri: str, *, storage_options: storage.StorageOptions | None) -> tuple[str, str] | None:
    """The feature store, and which of its folders (``features`` or ``cache``), that ``uri`` lies inside; ``None`` if none.

    A store is recognised by its fingerprint index (``cache/fingerprints.parquet``),
    which every extraction writes, not by folder names a user may also choose.
    """
    path = storage.filesystem(uri, storage_options=storage_options)[1] if storage.is_local(uri) else uri  # ~ and relative paths, as is_within reads them
    path = path.rstrip("/")
    while True:
        parent, name = posixpath.split(path)
        if not name or parent == path or parent.endswith(":"):  # up to the root, or to s3://bucket
            return None
        if name in ("features", "cache") and _readable_file(FeatureStore(parent).fingerprints_uri, storage_options=storage_options):
            return parent, name
        path = parent


def _readable_file(uri: str, *, storage_options: storage.StorageOptions | None) -> bool:
    """Whether ``uri`` exists; ``False`` where it may not be looked at (a bucket's policy may allow only the output's own prefix)."""
    try:
        return storage.exists(uri, storage_options=storage_options)
    except OSError:
        return False


def remove_stale_tables(store: FeatureStore, corpora: set[str]) -> list[str]:
    """Delete per-corpus tables of corpora this run does not have, so the store describes one run.

    Returns:
        the corpus names whose tables were removed.
    """
    stale = []
    # Only the store's own tables: deeper files are none of them (see load_features).
    for uri in storage.list_files(store.features_uri, suffix=".parquet", maxdepth=1, storage_options=store.storage_options):
        name = uri.rsplit("/", 1)[-1].removesuffix(".parquet")
        if not name.startswith("_") and name not in corpora:
            storage.remove(uri, storage_options=store.storage_options)
            stale.append(name)
    return stale


def find_duplicates(utterances: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Group files by content and apply the duplicate policy (see the module notes).

    Args:
        utterances: ``corpus, speaker, emotion, uri, sha256`` of the files that have features.

    Returns:
        ``(duplicates, rejected copies)``: one row per file of every group of
        two or more (``DUPLICATE_COLUMNS``, ``group`` numbered from 1, the
        kept copy first), and the copies that must not become feature rows
        (``REJECTED_COLUMNS``, stage ``duplicate``, the reason naming a twin).
    """
    repeated = utterances[utterances.duplicated("sha256", keep=False)]
    # Shortest URI first: an original is kept rather than its "… copy".
    repeated = repeated.assign(_length=repeated["uri"].str.len()).sort_values(["_length", "uri"], kind="stable").drop(columns="_length")
    rows, rejected = [], []
    for group, (_, files) in enumerate(repeated.groupby("sha256", sort=False), start=1):
        corpora = sorted(set(files["corpus"]))
        elsewhere = {c: [o for o in corpora if o != c] for c in corpora}
        for corpus, copies in files.groupby("corpus", sort=False):
            first = copies.iloc[0]
            conflicting = copies[["speaker", "emotion"]].drop_duplicates().shape[0] > 1
            for index, (_, row) in enumerate(copies.iterrows()):
                if conflicting:
                    # Name a copy whose label differs: one with the same label explains nothing.
                    twin = copies[(copies["speaker"] != row["speaker"]) | (copies["emotion"] != row["emotion"])].iloc[0]
                    reason = f"same audio as {twin['uri']} (speaker {twin['speaker']}, {twin['emotion']}): copies with conflicting labels are all rejected"
                    action = "rejected: conflicting speaker or emotion"
                elif index > 0:
                    reason = f"exact copy of {first['uri']} (kept once)"
                    action = "rejected: exact copy"
                else:
                    reason, action = "", "kept"
                if not reason and elsewhere[corpus]:
                    action = f"kept; also in {', '.join(elsewhere[corpus])}: left out of the source of a pair whose target holds it"
                if reason:
                    rejected.append({"uri": row["uri"], "corpus": corpus, "stage": "duplicate", "reason": reason})
                rows.append({"group": group, **{c: row[c] for c in ("sha256", "corpus", "speaker", "emotion", "uri")}, "action": action})
    return pd.DataFrame(rows, columns=DUPLICATE_COLUMNS), pd.DataFrame(rejected, columns=REJECTED_COLUMNS)


def count(number: int, noun: str, plural: str | None = None) -> str:
    """``number`` and the noun, singular or plural as the number needs."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def audio_warnings(kept: pd.DataFrame, duplicates: pd.DataFrame, *, analysis_rate: int, written: bool = True) -> list[str]:
    """One line per thing a user should know: low rates, repaired files, duplicates.

    Args:
        kept: the utterances that became feature rows, with ``AUDIO_COLUMNS``.
        duplicates: the duplicate groups (see :func:`find_duplicates`).
        analysis_rate: the rate every signal was resampled to, in Hz.
        written: whether ``features/_duplicates.parquet`` was written with these
            groups (not by ``crossemo train``, whose store's file describes another run).
    """
    warnings = []
    for corpus, rows in kept.groupby("corpus", sort=True):
        low = rows[rows["sampling_rate"] < analysis_rate]
        if len(low):
            rates = ", ".join(f"{int(r)} Hz" for r in sorted(set(low["sampling_rate"])))
            warnings.append(f"{corpus}: {len(low)} of {len(rows)} files are recorded below the analysis rate {analysis_rate} Hz ({rates}): their upper band is empty")
        notes = rows[rows["decode_notes"].fillna("") != ""]
        for uri, note in zip(notes["uri"], notes["decode_notes"]):
            if "below the analysis rate" not in note or "; " in note:
                warnings.append(f"{corpus}: {uri}: {note}")
    if len(duplicates):
        counts = duplicates["action"].str.split(":").str[0].value_counts()
        across = duplicates[duplicates["action"].str.startswith("kept; also in")]
        warnings.append(
            f"{count(duplicates['group'].nunique(), 'group')} of identical recordings ({count(len(duplicates), 'file')}): "
            f"{count(int(counts.get('rejected', 0)), 'copy', 'copies')} rejected (exact copies kept once, conflicting labels rejected), "
            f"{count(across['group'].nunique(), 'recording')} in more than one corpus (left out of a pair's source when its target holds them); "
            + ("see features/_duplicates.parquet" if written else "`crossemo features` on these corpora lists them in features/_duplicates.parquet")
        )
    return warnings


def feature_set_of(features_uri: str, *, storage_options: storage.StorageOptions | None = None) -> str:
    """The feature set a feature store was extracted with.

    Raises:
        storage.StorageError: the store's ``_manifest.parquet`` cannot be read.
    """
    return _manifest_metadata(features_uri, storage_options).get(FEATURE_SET_KEY, "")


def generation_of(features_uri: str, *, storage_options: storage.StorageOptions | None = None) -> dict:
    """The cache generation (:meth:`CacheGeneration.describe`) a feature store was made with; empty for a store written before it was kept.

    Raises:
        storage.StorageError: the store's ``_manifest.parquet`` cannot be read.
    """
    text = _manifest_metadata(features_uri, storage_options).get(GENERATION_RECORD_KEY)
    return json.loads(text) if text else {}


def _manifest_metadata(features_uri: str, storage_options: storage.StorageOptions | None) -> dict[str, str]:
    """The key-value metadata of a store's ``_manifest.parquet``; empty when it has none."""
    manifest = storage.join(features_uri, "_manifest.parquet")
    if not storage.exists(manifest, storage_options=storage_options):
        return {}
    try:
        return storage.read_metadata(manifest, storage_options=storage_options)
    except storage.PARQUET_READ_ERRORS as error:
        raise storage.unreadable(manifest, error, remedy="extract the features again (crossemo features) to rewrite it") from None


def load_features(features_uri: str, *, storage_options: storage.StorageOptions | None = None, corpora: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Read the feature store's per-corpus tables.

    Args:
        features_uri: ``<out>/features``.
        storage_options: filesystem options.
        corpora: the corpora to read; all when ``None``.

    Returns:
        a DataFrame per corpus name.

    Raises:
        storage.StorageError: ``features_uri`` is a file, holds no feature table,
            or lacks a requested corpus.
        ValueError: the tables come from different feature sets.
    """
    fs, path = storage.filesystem(features_uri, storage_options=storage_options)
    if fs.isfile(path):
        # Listing a file yields the file itself, which would pass for a store of one corpus.
        raise storage.StorageError(f"{features_uri} is a file, not a feature store folder (<out>/features of `crossemo features`)")
    # The tables lie directly in the store: deeper files (a run folder's cache, results and runs) are none of them.
    files = [uri for uri in storage.list_files(features_uri, suffix=".parquet", maxdepth=1, storage_options=storage_options) if not uri.rsplit("/", 1)[-1].startswith("_")]
    available = {uri.rsplit("/", 1)[-1].removesuffix(".parquet"): uri for uri in files}
    if not available:
        inner = storage.join(features_uri, "features")
        if storage.exists(storage.join(inner, "_manifest.parquet"), storage_options=storage_options):
            raise storage.StorageError(f"no feature tables under {features_uri}: it is a run's output folder; its feature store is {inner}")
        raise storage.StorageError(f"no feature tables under {features_uri}; run `crossemo features` first")
    names = corpora or sorted(available)
    missing = [name for name in names if name not in available]
    if missing:
        raise storage.StorageError(f"no features for corpus {', '.join(missing)} under {features_uri} (have: {', '.join(sorted(available))})")
    sets = {name: storage.read_metadata(available[name], storage_options=storage_options).get(FEATURE_SET_KEY, "?") for name in names}
    if len(set(sets.values())) > 1:
        raise ValueError(f"feature tables under {features_uri} come from different feature sets: {sets}")
    return {name: storage.read_frame(available[name], storage_options=storage_options) for name in names}
