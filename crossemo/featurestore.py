"""The feature store: openSMILE functionals per utterance, cached by audio content.

Layout below an output URI ``<out>`` (a local folder or ``s3://…``)::

    <out>/features/<corpus>.parquet      one row per utterance: corpus, speaker, emotion, uri, features…
    <out>/features/_manifest.parquet     every utterance with its corpus label, fingerprint and sha256
    <out>/features/_rejected.parquet     every file not turned into a row: uri, corpus, stage, reason
    <out>/cache/features/<set id>/*.parquet   extracted shards: sha256 + features (the cache)
    <out>/cache/fingerprints.parquet      uri + size/mtime fingerprint -> sha256 of the bytes

The cache is keyed by the SHA-256 of the audio bytes and the feature set, so a
re-run extracts nothing again, a renamed or copied file is not extracted twice,
and adding files extracts only the new ones. The fingerprint index lets a warm
run find the content key of an unchanged file without reading its audio.

Everything here runs without Ray; :mod:`crossemo.orchestration` schedules
:func:`extract_shard` on a cluster.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from crossemo import audio, storage
from crossemo.corpora import Manifest
from crossemo.features import FeatureError, FeatureExtractor
from crossemo.labels import METADATA_COLUMNS

REJECTED_COLUMNS = ["uri", "corpus", "stage", "reason"]
FEATURE_SET_KEY = "crossemo.feature_set"


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

    def cache_uri(self, feature_set_id: str) -> str:
        return storage.join(self.out, "cache", "features", feature_set_id)

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
    """

    keys: pd.DataFrame
    rejected: pd.DataFrame
    extracted: int
    cpu_seconds: float


def content_key(data: bytes) -> str:
    """The cache key of an audio file: SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()


def extract_shard(files: pd.DataFrame, *, extractor: FeatureExtractor, store: FeatureStore, cached: frozenset[str] = frozenset(), storage_options: storage.StorageOptions | None = None) -> ShardOutcome:
    """Extract features for a shard of files and write them to the cache.

    A file whose content is already in ``cached`` is hashed but not processed
    again. Unreadable, undecodable or degenerate files are rejected with their
    reason; the shard goes on.

    Args:
        files: ``uri`` and ``fingerprint`` per file.
        extractor: the feature set, built once where its config is readable
            (a custom config travels inside it to every worker).
        store: the feature store to write the cache shard to.
        cached: content keys already in the cache.
        storage_options: filesystem options for reading the audio (default: the store's).

    Returns:
        the shard's outcome; the features themselves go to the cache.
    """
    started = time.process_time()
    key_rows, rejected, vectors, shas = [], [], [], []
    for uri, fingerprint in zip(files["uri"], files["fingerprint"]):
        try:
            data = audio.read(uri, storage_options=storage_options if storage_options is not None else store.storage_options)
        except OSError as error:
            key_rows.append({"uri": uri, "fingerprint": fingerprint, "sha256": ""})
            rejected.append({"uri": uri, "sha256": "", "stage": "read", "reason": storage.describe_error(error)})
            continue
        sha = content_key(data)
        key_rows.append({"uri": uri, "fingerprint": fingerprint, "sha256": sha})
        if sha in cached or sha in shas:
            continue
        try:
            signal, rate = audio.decode(data)
            vectors.append(extractor.extract(signal, rate))
            shas.append(sha)
        except audio.AudioError as error:
            rejected.append({"uri": uri, "sha256": sha, "stage": "decode", "reason": str(error)})
        except FeatureError as error:
            rejected.append({"uri": uri, "sha256": sha, "stage": "features", "reason": str(error)})
    rejected_frame = pd.DataFrame(rejected, columns=["uri", "sha256", "stage", "reason"])
    if shas or len(rejected_frame):
        write_cache_shard(store, extractor, shas, vectors, rejected_frame)
    return ShardOutcome(
        keys=pd.DataFrame(key_rows, columns=["uri", "fingerprint", "sha256"]),
        rejected=rejected_frame,
        extracted=len(shas),
        cpu_seconds=time.process_time() - started,
    )


def write_cache_shard(store: FeatureStore, extractor: FeatureExtractor, shas: list[str], vectors: list[np.ndarray], rejected: pd.DataFrame) -> None:
    """Write one cache shard: features by content key, plus decode/feature rejections.

    Read failures are not cached (they may be transient); content that could
    not be decoded or gave non-finite features is, since the same bytes fail
    the same way.
    """
    matrix = np.vstack(vectors).astype(np.float32) if vectors else np.empty((0, len(extractor.names)), dtype=np.float32)
    frame = pd.DataFrame(matrix, columns=extractor.names)
    frame.insert(0, "sha256", shas)
    kept = rejected[rejected["stage"] != "read"].drop(columns=["uri"]).drop_duplicates("sha256")
    digest = hashlib.sha256("".join(sorted(shas + list(kept["sha256"]))).encode()).hexdigest()[:24]
    base = storage.join(store.cache_uri(extractor.feature_set_id), digest)
    metadata = {FEATURE_SET_KEY: extractor.feature_set_id}
    if len(frame):
        storage.write_frame(frame, f"{base}.parquet", storage_options=store.storage_options, metadata=metadata)
    if len(kept):
        storage.write_frame(kept.reset_index(drop=True), f"{base}.rejected.parquet", storage_options=store.storage_options, metadata=metadata)


def cached_keys(store: FeatureStore, feature_set_id: str) -> frozenset[str]:
    """Content keys with features or a cached rejection for this feature set."""
    keys: set[str] = set()
    for uri in storage.list_files(store.cache_uri(feature_set_id), suffix=".parquet", storage_options=store.storage_options):
        keys.update(storage.read_frame(uri, columns=["sha256"], storage_options=store.storage_options)["sha256"])
    return frozenset(keys)


def read_cache(store: FeatureStore, feature_set_id: str, wanted: set[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features and cached rejections for the content keys in ``wanted``.

    Returns:
        ``(features indexed by sha256, rejections with sha256/stage/reason)``.
    """
    features, rejections = [], []
    for uri in storage.list_files(store.cache_uri(feature_set_id), suffix=".parquet", storage_options=store.storage_options):
        shas = storage.read_frame(uri, columns=["sha256"], storage_options=store.storage_options)["sha256"]
        if not shas.isin(wanted).any():
            continue
        frame = storage.read_frame(uri, storage_options=store.storage_options)
        frame = frame[frame["sha256"].isin(wanted)]
        (rejections if uri.endswith(".rejected.parquet") else features).append(frame)
    feature_frame = pd.concat(features).drop_duplicates("sha256").set_index("sha256") if features else pd.DataFrame()
    rejected_frame = pd.concat(rejections).drop_duplicates("sha256") if rejections else pd.DataFrame(columns=["sha256", "stage", "reason"])
    return feature_frame, rejected_frame


def known_keys(store: FeatureStore, utterances: pd.DataFrame) -> pd.Series:
    """Content keys of unchanged files from the fingerprint index (``""`` where unknown)."""
    if not storage.exists(store.fingerprints_uri, storage_options=store.storage_options):
        return pd.Series("", index=utterances.index)
    index = storage.read_frame(store.fingerprints_uri, storage_options=store.storage_options)
    merged = utterances[["uri", "fingerprint"]].merge(index, on=["uri", "fingerprint"], how="left")
    return pd.Series(merged["sha256"].fillna("").to_numpy(), index=utterances.index)


def update_fingerprints(store: FeatureStore, keys: pd.DataFrame) -> None:
    """Merge newly learned ``uri, fingerprint -> sha256`` into the index."""
    keys = keys[keys["sha256"] != ""]
    if storage.exists(store.fingerprints_uri, storage_options=store.storage_options):
        old = storage.read_frame(store.fingerprints_uri, storage_options=store.storage_options)
        keys = pd.concat([old, keys])
    keys = keys.drop_duplicates(["uri", "fingerprint"], keep="last").sort_values("uri").reset_index(drop=True)
    storage.write_frame(keys, store.fingerprints_uri, storage_options=store.storage_options)


def shard(frame: pd.DataFrame, *, workers: int, max_size: int = 64) -> list[pd.DataFrame]:
    """Split work into shards: several per worker for balance, none too large to lose."""
    if frame.empty:
        return []
    size = int(min(max_size, max(1, np.ceil(len(frame) / (4 * max(workers, 1))))))
    return [frame.iloc[start:start + size].reset_index(drop=True) for start in range(0, len(frame), size)]


def assemble(store: FeatureStore, manifests: list[Manifest], extractor: FeatureExtractor, keys: pd.DataFrame, read_failures: pd.DataFrame) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Write ``<out>/features/``: one file per corpus, the manifest and the rejections.

    Args:
        store: the feature store.
        manifests: the corpora of this run.
        extractor: the feature set used.
        keys: ``uri -> sha256`` for every readable utterance.
        read_failures: files that could not be read this run (``uri``, ``stage``, ``reason``).

    Returns:
        ``(features per corpus, rejected rows)`` as written.
    """
    utterances = pd.concat([m.utterances for m in manifests], ignore_index=True)
    utterances = utterances.merge(keys[["uri", "sha256"]].drop_duplicates("uri"), on="uri", how="left")
    utterances["sha256"] = utterances["sha256"].fillna("")
    cached, cached_rejections = read_cache(store, extractor.feature_set_id, set(utterances["sha256"]) - {""})
    rejected = [m.skipped.assign(stage="recipe") for m in manifests if len(m.skipped)]
    if len(read_failures):
        rejected.append(read_failures.merge(utterances[["uri", "corpus"]], on="uri"))
    if len(cached_rejections):
        bad = utterances.merge(cached_rejections, on="sha256")
        rejected.append(bad[["uri", "corpus", "stage", "reason"]])
    rejected_frame = pd.concat(rejected, ignore_index=True)[REJECTED_COLUMNS] if rejected else pd.DataFrame(columns=REJECTED_COLUMNS)
    metadata = {FEATURE_SET_KEY: extractor.feature_set_id}
    written: dict[str, pd.DataFrame] = {}
    for manifest in manifests:
        rows = utterances[(utterances["corpus"] == manifest.corpus) & utterances["sha256"].isin(cached.index)]
        values = cached.loc[rows["sha256"], extractor.names].to_numpy(dtype=np.float32)
        frame = pd.concat([rows[list(METADATA_COLUMNS)].reset_index(drop=True), pd.DataFrame(values, columns=extractor.names)], axis=1)
        storage.write_frame(frame, storage.join(store.features_uri, f"{manifest.corpus}.parquet"), storage_options=store.storage_options, metadata=metadata)
        written[manifest.corpus] = frame
    storage.write_frame(utterances, storage.join(store.features_uri, "_manifest.parquet"), storage_options=store.storage_options, metadata=metadata)
    storage.write_frame(rejected_frame.reset_index(drop=True), storage.join(store.features_uri, "_rejected.parquet"), storage_options=store.storage_options, metadata=metadata)
    return written, rejected_frame


def feature_set_of(features_uri: str, *, storage_options: storage.StorageOptions | None = None) -> str:
    """The feature set a feature store was extracted with."""
    manifest = storage.join(features_uri, "_manifest.parquet")
    return storage.read_metadata(manifest, storage_options=storage_options).get(FEATURE_SET_KEY, "") if storage.exists(manifest, storage_options=storage_options) else ""


def load_features(features_uri: str, *, storage_options: storage.StorageOptions | None = None, corpora: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Read the feature store's per-corpus tables.

    Args:
        features_uri: ``<out>/features``.
        storage_options: filesystem options.
        corpora: the corpora to read; all when ``None``.

    Returns:
        a DataFrame per corpus name.

    Raises:
        FileNotFoundError: ``features_uri`` is a file, holds no feature table,
            or lacks a requested corpus.
        ValueError: the tables come from different feature sets.
    """
    fs, path = storage.filesystem(features_uri, storage_options=storage_options)
    if fs.isfile(path):
        # Listing a file yields the file itself, which would pass for a store of one corpus.
        raise FileNotFoundError(f"{features_uri} is a file, not a feature store folder (<out>/features of `crossemo features`)")
    files = [uri for uri in storage.list_files(features_uri, suffix=".parquet", storage_options=storage_options) if not uri.rsplit("/", 1)[-1].startswith("_")]
    available = {uri.rsplit("/", 1)[-1].removesuffix(".parquet"): uri for uri in files}
    if not available:
        raise FileNotFoundError(f"no feature tables under {features_uri}; run `crossemo features` first")
    names = corpora or sorted(available)
    missing = [name for name in names if name not in available]
    if missing:
        raise FileNotFoundError(f"no features for corpus {', '.join(missing)} under {features_uri} (have: {', '.join(sorted(available))})")
    sets = {name: storage.read_metadata(available[name], storage_options=storage_options).get(FEATURE_SET_KEY, "?") for name in names}
    if len(set(sets.values())) > 1:
        raise ValueError(f"feature tables under {features_uri} come from different feature sets: {sets}")
    return {name: storage.read_frame(available[name], storage_options=storage_options) for name in names}
