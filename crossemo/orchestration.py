"""Ray scheduling: the only module that talks to Ray.

The science (:mod:`crossemo.featurestore`, :mod:`crossemo.protocol`) is plain
Python; here its units of work become Ray tasks. Locally ``ray.init()`` starts
an in-process cluster; ``address`` (or ``RAY_ADDRESS``) joins an existing one,
which is what ``ray job submit`` sets up for the job's driver.

Each task writes its own output (a cache shard, a result file) before it
returns, so whatever finished survives a killed driver or worker, and the
next run skips it. Ray retries a task whose worker died.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import ray
from tqdm.auto import tqdm

from crossemo import audio, featurestore, storage
from crossemo.corpora import Manifest
from crossemo.features import FeatureExtractor

if TYPE_CHECKING:
    from crossemo import protocol

# Why protocol is imported inside the evaluation functions: a worker imports
# this module to run any task, and protocol imports every method, torch
# among them (seconds per worker). Extraction workers never need it.

TASK_RETRIES = 3


def connect(address: str | None = None, *, num_cpus: int | None = None) -> dict[str, Any]:
    """Start or join a Ray cluster.

    Args:
        address: a cluster address (``auto``, ``ray://…``, ``host:port``);
            ``None`` uses ``RAY_ADDRESS`` if set, else starts Ray in-process.
        num_cpus: CPUs for an in-process cluster (default: all).

    Returns:
        the cluster's resources.
    """
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        options: dict[str, Any] = {"address": address, "log_to_driver": True, "configure_logging": False}
        if address is None:
            options.update(num_cpus=num_cpus, include_dashboard=False)
        ray.init(**options)
        if threading.current_thread() is threading.main_thread():
            # ray.init() makes SIGTERM (what `ray job stop` and Kubernetes
            # send) exit at once with status 1 and no word in the log; end the
            # run like Ctrl-C instead, so the caller can say what is kept.
            signal.signal(signal.SIGTERM, interrupt_on_signal)
    return ray.cluster_resources()


_received_signal: str | None = None


def interrupt_on_signal(signum: int, frame: object) -> None:
    """Signal handler that ends the run like Ctrl-C and remembers which signal it was."""
    global _received_signal
    _received_signal = signal.Signals(signum).name
    raise KeyboardInterrupt(_received_signal)


def interrupting_signal() -> str:
    """The signal behind the latest ``KeyboardInterrupt``: what :func:`interrupt_on_signal` saw, else SIGINT.

    The exception itself cannot say: Ray's ``ray.get`` and ``ray.wait`` turn
    an exception raised by a signal handler into a new, bare ``KeyboardInterrupt``.
    """
    return _received_signal or "SIGINT"


def cluster_cpus() -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


@ray.remote(num_cpus=0)
class _ContentClaims:
    """Which shard extracts each content key in this run, so identical files are extracted once.

    A key belongs to the first shard that asks; the same shard asking again
    (a retried task) keeps it, so a worker that died does not lose the claim.
    """

    def __init__(self) -> None:
        self._owners: dict[str, str] = {}

    def claim(self, sha256: str, shard: str) -> bool:
        return self._owners.setdefault(sha256, shard) == shard


@ray.remote(num_cpus=1, max_retries=TASK_RETRIES)
def _extract_shard(
    files: pd.DataFrame, extractor: FeatureExtractor, settings: audio.AnalysisSettings, generation: featurestore.CacheGeneration,
    store: featurestore.FeatureStore, cached: frozenset[str], claims: Any,
) -> featurestore.ShardOutcome:
    shard = hashlib.sha256("\n".join(files["uri"]).encode()).hexdigest()
    return featurestore.extract_shard(
        files, extractor=extractor, store=store, settings=settings, generation=generation, cached=cached,
        claim=lambda sha256: ray.get(claims.claim.remote(sha256, shard)),
    )


@dataclass
class ExtractionSummary:
    """What a feature extraction did, for the CLI and the run record."""

    features: dict[str, pd.DataFrame]
    rejected: pd.DataFrame
    duplicates: pd.DataFrame
    warnings: list[str]
    feature_set_id: str
    generation: featurestore.CacheGeneration
    extracted: int = 0
    reused: int = 0
    task_cpu_seconds: float = 0.0
    wall_seconds: float = 0.0


def extract_features(
    manifests: list[Manifest],
    store: featurestore.FeatureStore,
    *,
    feature_set: str = "is10",
    settings: audio.AnalysisSettings | None = None,
    progress: bool = True,
) -> ExtractionSummary:
    """Extract every utterance not yet in the cache, in parallel, and write the feature store.

    Args:
        manifests: the corpora to extract.
        store: where features and cache live.
        feature_set: feature set name or config path.
        settings: the decode rules (the defaults when ``None``).
        progress: show a progress bar over files.

    Returns:
        the summary, including the feature tables as written.
    """
    started = time.perf_counter()
    settings = settings or audio.AnalysisSettings()
    extractor = FeatureExtractor(feature_set, storage_options=store.storage_options)
    generation = featurestore.CacheGeneration.of(extractor, settings)
    utterances = pd.concat([m.utterances for m in manifests], ignore_index=True)
    files = extract_files(utterances[["uri", "fingerprint"]], store, extractor=extractor, settings=settings, generation=generation, progress=progress)
    read_failures = files.rejected[files.rejected["stage"] == "read"]
    assembled = featurestore.assemble(store, manifests, extractor, generation, files.keys, read_failures[["uri", "stage", "reason"]])
    return ExtractionSummary(
        features=assembled.features,
        rejected=assembled.rejected,
        duplicates=assembled.duplicates,
        warnings=assembled.warnings,
        feature_set_id=extractor.feature_set_id,
        generation=generation,
        extracted=files.extracted,
        reused=files.reused,
        task_cpu_seconds=files.task_cpu_seconds,
        wall_seconds=time.perf_counter() - started,
    )


@dataclass
class FileExtraction:
    """What extracting a list of files did.

    Attributes:
        keys: ``uri``, ``fingerprint``, ``sha256`` of every file (``sha256`` empty when unreadable).
        rejected: ``uri``, ``sha256``, ``stage``, ``reason`` of the files this run tried and could not use.
        extracted: files openSMILE processed.
        reused: files whose content was in the cache already (features or a cached rejection).
        task_cpu_seconds: CPU seconds of the extraction tasks.
        cache_index: the cache file of every content key cached before the tasks ran
            (see :func:`crossemo.featurestore.cache_index`).
    """

    keys: pd.DataFrame
    rejected: pd.DataFrame
    extracted: int
    reused: int
    task_cpu_seconds: float
    cache_index: dict[str, str]


def extract_files(
    files: pd.DataFrame, store: featurestore.FeatureStore, *, extractor: FeatureExtractor, settings: audio.AnalysisSettings,
    generation: featurestore.CacheGeneration, progress: bool = True,
) -> FileExtraction:
    """Put every file's features in the content-keyed cache, extracting only what it lacks (Ray tasks).

    Args:
        files: ``uri`` and ``fingerprint`` per file.
        store: the feature store whose cache to read and fill.
        extractor: the feature set.
        settings: the decode rules.
        generation: the cache generation of ``extractor`` and ``settings``.
        progress: show a progress bar over files.
    """
    files = files[["uri", "fingerprint"]].reset_index(drop=True)
    files["sha256"] = featurestore.known_keys(store, files)
    index = featurestore.cache_index(store, generation)
    cached = frozenset(index)
    hits = files["sha256"].isin(cached)
    todo = files.loc[~hits, ["uri", "fingerprint"]].drop_duplicates("uri").reset_index(drop=True)
    # Asking the claims actor costs a round trip per file; a file whose size
    # no other file has cannot repeat another's content, so it need not ask.
    todo["may_repeat"] = featurestore.may_repeat(todo["fingerprint"])
    shards = featurestore.shard(todo, workers=cluster_cpus())
    outcomes: list[featurestore.ShardOutcome] = []
    if shards:
        cached_ref, extractor_ref, claims = ray.put(cached), ray.put(extractor), _ContentClaims.remote()
        pending = [_extract_shard.remote(s, extractor_ref, settings, generation, store, cached_ref, claims) for s in shards]
        sizes = {ref: len(s) for ref, s in zip(pending, shards)}
        with tqdm(total=len(todo), desc="features", unit="file", disable=not progress) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                outcomes.append(ray.get(done[0]))
                bar.update(sizes[done[0]])
        ray.kill(claims)
    keys = pd.concat([files.loc[hits, ["uri", "fingerprint", "sha256"]], *(o.keys for o in outcomes)], ignore_index=True)
    featurestore.update_fingerprints(store, keys)
    rejected = pd.concat([o.rejected for o in outcomes], ignore_index=True) if outcomes else pd.DataFrame(columns=["uri", "sha256", "stage", "reason"])
    return FileExtraction(
        keys=keys, rejected=rejected, extracted=sum(o.extracted for o in outcomes), reused=int(hits.sum()),
        task_cpu_seconds=sum(o.cpu_seconds for o in outcomes), cache_index=index,
    )


@ray.remote(num_cpus=1, max_retries=TASK_RETRIES)
def _prepare_shared(method: str, source: protocol.Dataset, target: protocol.Dataset | None, seed: int, params: tuple) -> tuple[Any, float]:
    from crossemo import protocol  # see the note on imports at the top of this module

    started = time.process_time()
    model = protocol.SHARED_PREPARATIONS[method](protocol.usable_source(source, target) if target is not None else source, seed=seed, params=params)
    return model, time.process_time() - started


@ray.remote(num_cpus=1, max_retries=TASK_RETRIES)
def _run_task(task: protocol.Task, source: protocol.Dataset | None, target: protocol.Dataset, uri: str, storage_options: dict | None, shared: tuple[Any, float] | None = None) -> dict[str, float]:
    from crossemo import protocol  # see the note on imports at the top of this module

    frame = protocol.run_task(task, source, target, shared_model=shared[0] if shared else None)
    storage.write_frame(frame, uri, storage_options=storage_options)
    return {"cpu_seconds": float(frame["cpu_seconds"].iloc[0]), "wall_seconds": float(frame["wall_seconds"].iloc[0])}


@dataclass
class EvaluationSummary:
    """What an evaluation did."""

    tasks: int
    reused: int
    fits: int
    task_cpu_seconds: float
    wall_seconds: float
    result_uris: list[str]


def evaluate(datasets: dict[str, protocol.Dataset], tasks: list[protocol.Task], results_uri: str, *, storage_options: dict | None = None, progress: bool = True) -> EvaluationSummary:
    """Run every task whose result is not written yet; each writes its own Parquet file.

    The datasets go into the object store once; every task gets references,
    never copies. Work shared by folds (the fcnn's source network) runs once
    per source corpus and seed and is passed along as a reference too.
    """
    from crossemo import protocol  # see the note on imports at the top of this module

    started = time.perf_counter()
    uris = {task.key: storage.join(results_uri, task.result_path()) for task in tasks}
    done = set(storage.list_files(results_uri, suffix=".parquet", storage_options=storage_options))
    todo = [task for task in tasks if uris[task.key] not in done]
    refs = {name: ray.put(data) for name, data in datasets.items()}
    shared: dict[tuple[str, str, str | None, int], Any] = {}
    # One preparation per source and seed, unless the target holds some of
    # the source's recordings: then that pair needs its own, without them.
    # Whether it does is a property of the pair, so it is decided once per pair.
    pairs = {(task.source, task.target) for task in todo if task.shared}
    own_source = {(source, target): protocol.usable_source(datasets[source], datasets[target]) is not datasets[source] for source, target in pairs}

    def shared_key(task: protocol.Task) -> tuple[str, str, str | None, int]:
        return (task.shared, task.source, task.target if own_source[(task.source, task.target)] else None, task.seed)

    for task in todo:
        if task.shared and shared_key(task) not in shared:
            key = shared_key(task)
            shared[key] = _prepare_shared.remote(task.shared, refs[task.source], refs[key[2]] if key[2] else None, task.seed, task.params)
    remaining = [
        _run_task.remote(
            task, refs[task.source] if task.source else None, refs[task.target], uris[task.key], storage_options,
            shared.get(shared_key(task)) if task.shared else None,
        )
        for task in todo
    ]
    cpu = 0.0
    with tqdm(total=len(todo), desc="tasks", unit="task", disable=not progress or not todo) as bar:
        while remaining:
            finished, remaining = ray.wait(remaining, num_returns=1)
            cpu += ray.get(finished[0])["cpu_seconds"]
            bar.update(1)
    cpu += sum(seconds for _, seconds in ray.get(list(shared.values())))
    return EvaluationSummary(
        tasks=len(tasks), reused=len(tasks) - len(todo), fits=len(todo) + len(shared), task_cpu_seconds=cpu,
        wall_seconds=time.perf_counter() - started, result_uris=[uris[task.key] for task in tasks],
    )


def _follow(pending: list, sizes: list[int], what: str, progress: bool) -> None:
    """Wait for every task, with a progress bar over the files they hold."""
    size_of = dict(zip(pending, sizes))
    with tqdm(total=sum(sizes), desc=what, unit="file", disable=not progress) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            ray.get(done[0])
            bar.update(size_of[done[0]])


_LOADED_BUNDLES: dict[str, Any] = {}
"""Bundles a worker has loaded, by model id: a worker labels many shards with one model."""


def _bundle(uri: str, model_id: str, storage_options: dict | None) -> Any:
    from crossemo import bundle

    if model_id not in _LOADED_BUNDLES:
        loaded = bundle.load_bundle(uri, storage_options=storage_options)
        if loaded.model_id != model_id:
            raise RuntimeError(f"the bundle at {uri} changed while labelling (model {loaded.model_id}, expected {model_id})")
        _LOADED_BUNDLES.clear()
        _LOADED_BUNDLES[model_id] = loaded
    return _LOADED_BUNDLES[model_id]


@ray.remote(num_cpus=1, max_retries=TASK_RETRIES)
def _label_shard(
    shard: Any, rows: pd.DataFrame, bundle_uri: str, model_id: str, rule: str, part_uri: str, storage_options: dict | None,
) -> dict[str, Any]:
    """Label one shard's files from the feature cache and write its part file; returns its counts."""
    from crossemo import prediction

    started = time.process_time()
    loaded = _bundle(bundle_uri, model_id, storage_options)
    names = list(loaded.metadata["feature_names"])
    vectors, rejected = {}, [rows.loc[rows["cache_uri"] == "", ["uri", "stage", "reason"]]]
    for cache_uri, group in rows[rows["cache_uri"] != ""].groupby("cache_uri"):
        frame = storage.read_frame(cache_uri, storage_options=storage_options)
        frame = frame[frame["sha256"].isin(set(group["sha256"]))].drop_duplicates("sha256").set_index("sha256")
        if cache_uri.endswith(".rejected.parquet"):
            rejected.append(group.assign(stage=frame.loc[group["sha256"], "stage"].to_numpy(), reason=frame.loc[group["sha256"], "reason"].to_numpy())[["uri", "stage", "reason"]])
        else:
            vectors.update(zip(group["uri"], frame.loc[group["sha256"], names].to_numpy(dtype=np.float32)))
    rejected_frame = pd.concat(rejected, ignore_index=True).merge(shard.files[["uri", "speaker"]], on="uri")
    usable = shard.files[shard.files["uri"].isin(vectors.keys())].reset_index(drop=True)
    classes = [str(c) for c in loaded.method.classes_]
    out = usable.drop(columns=["fingerprint"])
    if len(usable):
        emotions, probabilities = prediction.label(loaded.method, np.vstack([vectors[uri] for uri in usable["uri"]]), usable["speaker"].to_numpy(str))
        out = prediction.labelled_frame(out, classes, emotions, probabilities)
    else:
        out = prediction.labelled_frame(out, classes, np.empty(0, dtype=str), np.empty((0, len(classes))))
    out["model_id"] = model_id
    storage.write_frame(out, part_uri, storage_options=storage_options, metadata=prediction.part_metadata(shard, rule=rule, rejected=rejected_frame))
    return {"labelled": len(out), "rejected": len(rejected_frame), "cpu_seconds": time.process_time() - started}


@ray.remote(num_cpus=1, max_retries=TASK_RETRIES)
def _label_segments_shard(
    shard: Any, segmentation: Any, bundle_uri: str, model_id: str, rule: str, store: featurestore.FeatureStore, extractor: FeatureExtractor,
    settings: audio.AnalysisSettings, generation: featurestore.CacheGeneration, out: str, storage_options: dict | None,
) -> dict[str, Any]:
    """Cut, extract and label one shard's files window by window; write its segments part, then its predictions part."""
    from crossemo import prediction

    started = time.process_time()
    loaded = _bundle(bundle_uri, model_id, storage_options)
    names = list(loaded.metadata["feature_names"])
    classes = [str(c) for c in loaded.method.classes_]
    windows, rejected = [], []
    for uri, speaker in zip(shard.files["uri"], shard.files["speaker"]):
        try:
            frame = prediction.file_windows(
                uri, mode=segmentation.mode, hop=segmentation.hop, max_length=segmentation.max_length, rule=rule, store=store,
                generation=generation, extractor=extractor, settings=settings, storage_options=storage_options,
            )
        except OSError as error:
            rejected.append({"uri": uri, "speaker": speaker, "stage": "read", "reason": storage.describe_error(error)})
            continue
        except audio.AudioError as error:
            rejected.append({"uri": uri, "speaker": speaker, "stage": "decode", "reason": str(error)})
            continue
        usable = frame[frame["reason"] == ""]
        if usable.empty:
            rejected.append({"uri": uri, "speaker": speaker, "stage": "segments", "reason": prediction.no_window_reason(frame, segmentation.mode)})
            continue
        windows.append(usable.assign(uri=uri, speaker=speaker))
    rejected_frame = pd.DataFrame(rejected, columns=prediction.REJECTED_COLUMNS)
    segment_rows = pd.concat(windows, ignore_index=True) if windows else pd.DataFrame(columns=["uri", "speaker", "start", "end", *names])
    if len(segment_rows):
        emotions, probabilities = prediction.label(loaded.method, segment_rows[names].to_numpy(dtype=np.float32), segment_rows["speaker"].to_numpy(str))
    else:
        emotions, probabilities = np.empty(0, dtype=str), np.empty((0, len(classes)))
    labelled = prediction.labelled_frame(segment_rows[["uri", "start", "end"]], classes, emotions, probabilities)
    labelled["model_id"] = model_id
    storage.write_frame(labelled, storage.join(out, "segments", shard.part_name()), storage_options=storage_options)
    files = shard.files[shard.files["uri"].isin(set(labelled["uri"]))].reset_index(drop=True)
    means = [prediction.mean_of_windows(labelled[labelled["uri"] == uri], classes) for uri in files["uri"]]
    per_file = prediction.labelled_frame(
        files.drop(columns=["fingerprint"]), classes, np.array([m[0] for m in means], dtype=str), np.vstack([m[1] for m in means]) if means else np.empty((0, len(classes))),
    )
    per_file["windows"] = [int((labelled["uri"] == uri).sum()) for uri in files["uri"]]
    per_file["model_id"] = model_id
    part = storage.join(out, "predictions", shard.part_name())
    storage.write_frame(per_file, part, storage_options=storage_options, metadata=prediction.part_metadata(shard, rule=rule, rejected=rejected_frame))
    return {"labelled": len(per_file), "rejected": len(rejected_frame), "cpu_seconds": time.process_time() - started}


@dataclass
class LabellingSummary:
    """What a ``predict`` run did."""

    files: int
    labelled: int
    rejected: int
    reused_shards: int
    shards: int
    extracted: int | None
    removed_parts: int
    emotions: dict[str, int]
    windows: int
    wall_seconds: float
    ray_started: bool


def label_files(
    listing: Any, loaded: Any, bundle_uri: str, out: str, *, store: featurestore.FeatureStore, extractor: FeatureExtractor,
    settings: audio.AnalysisSettings, segmentation: Any = None, address: str | None = None, storage_options: dict | None = None, progress: bool = True,
) -> LabellingSummary:
    """Label every listed file with a loaded bundle, skipping shards already written; Ray starts only if there is work.

    Args:
        listing: the files (:class:`crossemo.inputs.AudioFiles`).
        loaded: the model bundle (:class:`crossemo.bundle.LoadedBundle`), loaded and checked on the driver.
        bundle_uri: where workers load the bundle from.
        out: the output folder or prefix; parts go to ``out/predictions``.
        store: the feature store whose cache to read and fill.
        extractor: the bundle's feature set.
        settings: the bundle's decode rules.
        segmentation: how to cut files into windows (:class:`crossemo.prediction.Segmentation`); ``None``: whole files.
        address: Ray cluster address (see :func:`connect`).
        storage_options: fsspec options for ``out``, the store and the bundle.
        progress: show progress bars.

    Returns:
        the counts, and the share of each predicted emotion over all parts.
    """
    from crossemo import prediction

    started = time.perf_counter()
    folder = storage.join(out, "predictions")
    model_id = loaded.model_id
    # Shards are keyed by the model and by the model.json entries that decide
    # how audio becomes features: the model id covers the bundle's files, not
    # these, so an edited decode rule must not reuse parts labelled under the old one.
    shard_model = prediction.labelling_key(loaded)
    rule = segmentation.rule() if segmentation is not None else prediction.WHOLE_FILES
    per_speaker = prediction.normalises_test_speakers(loaded.method)
    files = listing.files
    valid, stale = prediction.still_valid(prediction.read_parts(folder, storage_options=storage_options), files, model_id=shard_model, rule=rule, per_speaker=per_speaker)
    covered = set().union(*(set(part.files["uri"]) for part in valid)) if valid else set()
    todo = files[~files["uri"].isin(covered)].reset_index(drop=True)
    shards = prediction.plan_shards(todo, model_id=shard_model, rule=rule, per_speaker=per_speaker)
    extraction = None
    if shards and segmentation is not None:
        connect(address)
        generation = featurestore.CacheGeneration.of(extractor, settings)
        extractor_ref = ray.put(extractor)
        pending = [
            _label_segments_shard.remote(shard, segmentation, bundle_uri, model_id, rule, store, extractor_ref, settings, generation, out, storage_options)
            for shard in shards
        ]
        _follow(pending, [len(shard.files) for shard in shards], "files", progress)
    elif shards:
        connect(address)
        generation = featurestore.CacheGeneration.of(extractor, settings)
        extraction = extract_files(todo, store, extractor=extractor, settings=settings, generation=generation, progress=progress)
        keys = extraction.keys.drop_duplicates("uri").set_index("uri")["sha256"]
        index = featurestore.cache_index(store, generation, known=extraction.cache_index)
        failures = extraction.rejected.drop_duplicates("uri").set_index("uri")
        pending = []
        for shard in shards:
            rows = pd.DataFrame({"uri": shard.files["uri"]})
            rows["sha256"] = rows["uri"].map(keys).fillna("")
            rows["cache_uri"] = rows["sha256"].map(index).fillna("")
            # A file with no cache entry could not be read (or its content was rejected this run without caching).
            rows["stage"] = rows["uri"].map(failures["stage"]).fillna("read") if len(failures) else "read"
            rows["reason"] = rows["uri"].map(failures["reason"]).fillna("no features") if len(failures) else "no features"
            pending.append(_label_shard.remote(shard, rows, bundle_uri, model_id, rule, storage.join(folder, shard.part_name()), storage_options))
        _follow(pending, [len(shard.files) for shard in shards], "labels", progress)
    for part in stale:
        storage.remove(part.uri, storage_options=storage_options)
        windows = storage.join(out, "segments", part.uri.rsplit("/", 1)[-1])
        if storage.exists(windows, storage_options=storage_options):
            storage.remove(windows, storage_options=storage_options)
    parts = prediction.read_parts(folder, storage_options=storage_options)
    rejected = pd.concat([part.rejected for part in parts] + [listing.missing.assign(speaker="")[prediction.REJECTED_COLUMNS]], ignore_index=True)
    storage.write_frame(rejected.reset_index(drop=True), storage.join(folder, prediction.REJECTED_FILE), storage_options=storage_options)
    emotions: dict[str, int] = {}
    windows = 0
    for part in parts:
        # Only the columns the summary counts: a part can hold many carried columns.
        labels = storage.read_frame(part.uri, columns=["emotion", "windows"] if segmentation is not None else ["emotion"], storage_options=storage_options)
        for emotion, n in labels["emotion"].value_counts().items():
            emotions[str(emotion)] = emotions.get(str(emotion), 0) + int(n)
        windows += int(labels["windows"].sum()) if "windows" in labels else 0
    return LabellingSummary(
        files=len(files) + len(listing.missing), labelled=sum(emotions.values()), rejected=len(rejected),
        reused_shards=len(valid), shards=len(shards), extracted=extraction.extracted if extraction else None, removed_parts=len(stale),
        emotions=emotions, windows=windows, wall_seconds=time.perf_counter() - started, ray_started=bool(shards),
    )
