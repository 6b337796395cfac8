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

import atexit
import contextlib
import functools
import hashlib
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
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

Outcome = TypeVar("Outcome")


HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:(?P<port>[0-9]{1,5}))?")
"""A host name, IPv4 or ``[IPv6]`` address, and an optional port."""

RAY_CLIENT_PORT = 10001
"""The port of ``ray://host`` without one (Ray's default client server port)."""

PROBE_SECONDS = 10.0
"""How long the probe of a cluster address waits for a connection."""


class ClusterError(ValueError):
    """A Ray address that ``ray.init`` cannot take, or where no cluster answers."""


def check_address(address: str | None) -> None:
    """Refuse a malformed Ray address before any work (no connection is tried: a run whose work is all done needs no cluster).

    Args:
        address: as for :func:`connect`; ``None`` checks ``RAY_ADDRESS``.

    Raises:
        ClusterError: the address is not ``host:port``, ``ray://host[:port]``, ``auto`` or ``local``.
    """
    _endpoint(address)


def probe_cluster(address: str | None) -> None:
    """Refuse a Ray address where no cluster answers, since ``ray.init`` would not.

    Given a ``host:port`` where nothing listens, or that answers but is not
    a Ray cluster (the dashboard's port), ``ray.init`` retries for about a
    quarter of an hour and, inside Ray's connection loop, does not answer
    Ctrl-C. A cluster's GCS and client server speak gRPC, so a TCP
    connection and an HTTP/2 greeting tell within a second.

    Args:
        address: as for :func:`connect`; ``None`` checks ``RAY_ADDRESS``.

    Raises:
        ClusterError: a malformed address (see :func:`check_address`), nothing
            accepts a connection there within :data:`PROBE_SECONDS`, or what
            answers does not speak HTTP/2.
    """
    endpoint = _endpoint(address)
    if endpoint is None:
        return
    source, address, host, port = endpoint
    try:
        with socket.create_connection((host, port), timeout=PROBE_SECONDS) as connection:
            # With TLS on, the server expects a TLS handshake first; the TCP answer is all this probe can check.
            grpc = os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true") or _answers_http2(connection)
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise ClusterError(f"no Ray cluster answers at {source} {address!r} ({reason}): is the cluster up, and is that its GCS port (or, after ray://, its client port)?") from None
    if not grpc:
        # The dashboard's port (8265, what `ray job submit` takes) is the likely mix-up.
        raise ClusterError(
            f"{source} {address!r} answers, but not as a Ray cluster does (gRPC): is that the dashboard's port? "
            "Give the GCS address `ray start --head` prints (port 6379 by default), or ray://host:10001"
        )


def _endpoint(address: str | None) -> tuple[str, str, str, int] | None:
    """``(where the address came from, the address, host, port)`` of a cluster to join; ``None`` for an in-process one.

    Raises:
        ClusterError: a malformed address.
    """
    # Without an address, connect() takes RAY_ADDRESS; so does ray.init(address="auto").
    source, address = ("address", address) if address and address != "auto" else ("RAY_ADDRESS", os.environ.get("RAY_ADDRESS") or address)
    if not address or address in ("auto", "local"):
        return None
    client = address.startswith("ray://")
    match = HOST_PORT.fullmatch(address.removeprefix("ray://"))
    if not match or (match["port"] is None and not client) or (match["port"] is not None and not 0 < int(match["port"]) < 65536):
        raise ClusterError(f"{source} {address!r} is not a Ray address: use host:port, ray://host[:port], auto or local")
    return source, address, match[1].strip("[]"), RAY_CLIENT_PORT if match["port"] is None else int(match["port"])


HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")
"""What an HTTP/2 client sends first: the connection preface and an empty SETTINGS frame (RFC 9113, 3.4)."""


def _answers_http2(connection: socket.socket) -> bool:
    """Whether the server at the other end of ``connection`` speaks HTTP/2, as gRPC servers (Ray's GCS and client server) do: it answers the preface with a SETTINGS frame.

    Raises:
        OSError: no answer within the connection's timeout, or the connection failed.
    """
    connection.sendall(HTTP2_PREFACE)
    header = b""
    while len(header) < 9:  # a frame header: length (3 bytes), type, flags, stream id (4)
        chunk = connection.recv(9 - len(header))
        if not chunk:
            return False
        header += chunk
    return header[3] == 0x04


def connect(address: str | None = None, *, num_cpus: int | None = None) -> dict[str, Any]:
    """Start or join a Ray cluster.

    Args:
        address: a cluster address (``auto``, ``ray://…``, ``host:port``);
            ``None`` uses ``RAY_ADDRESS`` if set, else starts Ray in-process.
        num_cpus: CPUs for an in-process cluster (default: all).

    Returns:
        the cluster's resources.

    Raises:
        ClusterError: see :func:`probe_cluster`; or the cluster answered but
            would not let this client join (its authentication token refused).
    """
    if not ray.is_initialized():
        probe_cluster(address)
        address = address or os.environ.get("RAY_ADDRESS") or None
        options: dict[str, Any] = {"address": address, "log_to_driver": True, "configure_logging": False}
        if address is None:
            options.update(num_cpus=num_cpus, include_dashboard=False)
        try:
            with _quiet_token_notice() if address in (None, "local") else contextlib.nullcontext():
                ray.init(**options)
        except SystemExit as stop:
            # For the length of ray.init Ray's own handler turns SIGTERM into
            # sys.exit(15), which would end a job without a word in its log.
            if stop.code == signal.SIGTERM:
                interrupt_on_signal(signal.SIGTERM, None)
            raise
        except ConnectionError as error:
            # The address answered the probe, then refused to let this client join.
            raise ClusterError(_join_failure(address, error)) from None
        if threading.current_thread() is threading.main_thread():
            # ray.init() makes SIGTERM (what `ray job stop` and Kubernetes
            # send) exit at once with status 1 and no word in the log; end the
            # run like Ctrl-C instead, so the caller can say what is kept.
            signal.signal(signal.SIGTERM, interrupt_on_signal)
            _exit_quietly_on_signals_at_exit()
    return ray.cluster_resources()


@functools.cache  # registered once per process
def _exit_quietly_on_signals_at_exit() -> None:
    """From interpreter exit on, a SIGTERM or SIGINT (Ctrl-C) ends the process at once, quietly, with status 143 or 130.

    Ray shuts itself down at exit, after every later-registered exit hook
    (this one); a signal in that half second raised ``KeyboardInterrupt``
    there (:func:`interrupt_on_signal`'s, or Python's own for Ctrl-C), and
    Python printed a traceback under a summary of finished work. What is
    printed is flushed first; exit hooks registered before :func:`connect`
    do not run after such a signal.
    """

    def exit_now(signum: int, frame: object) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(128 + signum)

    def at_exit() -> None:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                if signal.getsignal(signum) is not signal.SIG_IGN:  # a process told to ignore Ctrl-C goes on ignoring it
                    signal.signal(signum, exit_now)

    atexit.register(at_exit)


def _join_failure(address: str | None, error: ConnectionError) -> str:
    """Why Ray could not join the cluster at ``address``, in one line: a token it refused, else Ray's own reason."""
    # Ray raises a bare ConnectionError over a RuntimeError whose text holds
    # the AuthenticationError of its last attempt.
    chain, cause = [], error
    while cause is not None:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    if any(isinstance(link, ray.exceptions.AuthenticationError) or "InvalidAuthToken" in str(link) for link in chain):
        return (
            f"the Ray cluster at {address!r} refused this client's authentication token (or found none): set RAY_AUTH_MODE=token and "
            "RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's token, as its nodes have it"
        )
    return f"cannot join the Ray cluster at {address!r}: {storage.describe_error(error)}"


TOKEN_NOTICE = "Token authentication is enabled for this Ray cluster"
"""How Ray's notice that it turned on token authentication by default begins."""


@contextlib.contextmanager
def _quiet_token_notice() -> Any:
    """Leave out Ray's notice that a cluster it starts uses a token, and nothing else it logs.

    Ray prints it at every in-process start; that cluster listens on this
    machine only and ends with the run, and the notice was the first line a
    run showed. The notice that token authentication is *off* still shows.
    """
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    logger.addFilter(_not_token_notice)
    try:
        yield
    finally:
        logger.removeFilter(_not_token_notice)


def _not_token_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(TOKEN_NOTICE)


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


def _worker_name() -> str:
    """``<node id>:<pid>`` of the Ray worker process this runs in."""
    return f"{ray.get_runtime_context().get_node_id()[:8]}:{os.getpid()}"


@ray.remote(num_cpus=1)
def _import(work: Callable[..., Any]) -> str:
    return _worker_name()  # ``work`` arriving here imported its module


def prestart(work: Callable[..., Any]) -> None:
    """Have a worker per CPU of the cluster import ``work``'s module, and wait until they have.

    A worker imports the module of a task's function when it runs its first
    task (for extraction about half a second: pandas, pyarrow, openSMILE).
    Done here, as part of starting up, the first shards start at once on
    every CPU. The tasks go out together and each holds its CPU while it
    imports, so each lands on a worker of its own unless a worker is slow to
    start (then that worker imports with its first shard).
    """
    ray.get([_import.remote(work) for _ in range(cluster_cpus())])


@ray.remote(num_cpus=0)
class _ContentClaims:
    """Which shard extracts each content key in this run, so identical files are extracted once.

    A key belongs to the first shard that asks; the same shard asking again
    (a retried task) keeps it, so a worker that died does not lose the claim.
    """

    def __init__(self) -> None:
        self._owners: dict[str, str] = {}

    def claim(self, keys: list[str], shard: str) -> list[bool]:
        """Whether ``shard`` owns each key: one round trip for a batch of files."""
        return [self._owners.setdefault(sha256, shard) == shard for sha256 in keys]


@dataclass(frozen=True)
class TaskTiming:
    """When one task of :func:`run_sharded` ran, as its worker saw it.

    Attributes:
        shard: the shard's position in the order given.
        items: rows in the shard.
        worker: ``<node id>:<pid>`` of the worker process.
        started: wall clock (:func:`time.time`, seconds) when the task began.
        finished: wall clock when it returned.
        cpu_seconds: CPU seconds of the worker process during the task.
    """

    shard: int
    items: int
    worker: str
    started: float
    finished: float
    cpu_seconds: float


@dataclass
class ShardedRun(Generic[Outcome]):
    """What :func:`run_sharded` collected.

    Attributes:
        outcomes: each shard's outcome, in the order the shards were given.
        timings: when each task ran, in the same order.
    """

    outcomes: list[Outcome] = field(default_factory=list)
    timings: list[TaskTiming] = field(default_factory=list)


@ray.remote(num_cpus=1, max_retries=TASK_RETRIES)
def _shard_task(work: Callable[..., Outcome], index: int, shard: pd.DataFrame, *shared: Any) -> tuple[Outcome, TaskTiming]:
    started, cpu = time.time(), time.process_time()
    outcome = work(shard, *shared)
    return outcome, TaskTiming(index, len(shard), _worker_name(), started, time.time(), time.process_time() - cpu)


def _gather(pending: list, sizes: list[int], desc: str, progress: bool) -> list:
    """Wait for every task, with a progress bar over the files they hold.

    Returns:
        the tasks' results, in the order of ``pending``; a task that raised makes this raise.
    """
    position = {ref: index for index, ref in enumerate(pending)}
    results: list[Any] = [None] * len(pending)
    with tqdm(total=sum(sizes), desc=desc, unit="file", disable=not progress) as bar:
        waiting = list(pending)
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1)
            results[position[done[0]]] = ray.get(done[0])
            bar.update(sizes[position[done[0]]])
    return results


def run_sharded(work: Callable[..., Outcome], shards: Sequence[pd.DataFrame], *shared: Any, desc: str, progress: bool = True) -> ShardedRun[Outcome]:
    """Run ``work(shard, *shared)`` for every shard as Ray tasks, keeping every CPU of the cluster busy.

    Every shard is submitted at once, in the order given; Ray hands the next
    waiting one to whichever worker frees up, so no worker idles while a shard
    waits and the order is the priority (largest first: see
    :func:`crossemo.featurestore.shard`). The shared arguments go into the
    object store once, not once per task. A task whose worker died runs
    again (``TASK_RETRIES``); a task that raised makes this raise.

    Args:
        work: a module-level function (workers import it by name) taking a
            shard and the shared arguments; it should write its own output, so
            that what finished survives a lost driver.
        shards: the units of work; their rows count for the progress bar.
        shared: arguments every task gets (an extractor, a model …).
        desc: the progress bar's label, also the tasks' name in Ray's listings.
        progress: show a progress bar over rows.

    Returns:
        the outcomes and timings, in the order of ``shards``.
    """
    refs = [ray.put(value) for value in shared]
    pending = [_shard_task.options(name=desc).remote(work, index, shard, *refs) for index, shard in enumerate(shards)]
    ordered = _gather(pending, [len(shard) for shard in shards], desc, progress)
    return ShardedRun([outcome for outcome, _ in ordered], [timing for _, timing in ordered])


def _extract_shard(
    files: pd.DataFrame, extractor: FeatureExtractor, settings: audio.AnalysisSettings, generation: featurestore.CacheGeneration,
    store: featurestore.FeatureStore, cached: Container[str], claims: Any, return_features: bool,
) -> featurestore.ShardOutcome:
    """:func:`crossemo.featurestore.extract_shard` as a task of :func:`run_sharded`.

    ``claims`` is ``None`` when no file may repeat another shard's. Without
    ``return_features`` only the content keys of the cache files written travel
    back to the driver.
    """
    shard = hashlib.sha256("\n".join(files["uri"]).encode()).hexdigest()
    outcome = featurestore.extract_shard(
        files, extractor=extractor, store=store, settings=settings, generation=generation, cached=cached,
        claim=None if claims is None else lambda keys: ray.get(claims.claim.remote(keys, shard)),
    )
    if not return_features:
        # A new table, not a selection: a selection keeps the file's metadata,
        # whose 1582 feature names (about 50 KB) would reach the driver with
        # every shard and stay there until extraction ends.
        outcome.cache_tables = {uri: pa.table({"sha256": table.column("sha256")}) for uri, table in outcome.cache_tables.items()}
    return outcome


@dataclass
class ExtractionSummary:
    """What a feature extraction did, for the CLI and the run record.

    Attributes:
        startup_seconds: wall seconds spent starting or joining Ray and
            readying its workers (:func:`prestart`); 0 when nothing needed
            extracting: then Ray is not started.
        wall_seconds: wall seconds of the whole extraction, start-up included.
        timings: when each extraction task ran (see :class:`TaskTiming`).
    """

    features: dict[str, pd.DataFrame]
    rejected: pd.DataFrame
    duplicates: pd.DataFrame
    warnings: list[str]
    feature_set_id: str
    generation: featurestore.CacheGeneration
    extracted: int = 0
    reused: int = 0
    task_cpu_seconds: float = 0.0
    startup_seconds: float = 0.0
    wall_seconds: float = 0.0
    timings: list[TaskTiming] = field(default_factory=list)


def extract_features(
    manifests: list[Manifest],
    store: featurestore.FeatureStore,
    *,
    feature_set: str = "is10",
    settings: audio.AnalysisSettings | None = None,
    address: str | None = None,
    write_store: bool = True,
    progress: bool = True,
) -> ExtractionSummary:
    """Extract every utterance not yet in the cache, in parallel, and write the feature store.

    The cache is read before Ray is touched: when every utterance is cached,
    Ray is neither started nor joined.

    Args:
        manifests: the corpora to extract.
        store: where features and cache live.
        feature_set: feature set name or config path.
        settings: the decode rules (the defaults when ``None``).
        address: the Ray cluster to use when there is work (see :func:`connect`).
        write_store: write ``<out>/features/``; without, only the cache is
            filled and the tables are returned (see :func:`crossemo.featurestore.assemble`).
        progress: show a progress bar over files.

    Returns:
        the summary, including the feature tables.
    """
    started = time.perf_counter()
    settings = settings or audio.AnalysisSettings()
    extractor = FeatureExtractor(feature_set, storage_options=store.storage_options)
    generation = featurestore.CacheGeneration.of(extractor, settings)
    utterances = pd.concat([m.utterances for m in manifests], ignore_index=True)
    files = extract_files(
        utterances[["uri", "fingerprint"]], store, extractor=extractor, settings=settings, generation=generation, read_features=True, address=address, progress=progress,
    )
    read_failures = files.rejected[files.rejected["stage"] == "read"]
    assembled = featurestore.assemble(files.cache, manifests, extractor, files.keys, read_failures[["uri", "stage", "reason"]], write=write_store)
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
        startup_seconds=files.startup_seconds,
        wall_seconds=time.perf_counter() - started,
        timings=files.timings,
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
        cache: the cache with every file this run wrote to it; its features
            read when asked for (``read_features``), else only where each content is.
        startup_seconds: wall seconds spent starting or joining Ray and readying
            its workers (:func:`prestart`); 0 when nothing needed extracting.
        timings: when each extraction task ran.
    """

    keys: pd.DataFrame
    rejected: pd.DataFrame
    extracted: int
    reused: int
    task_cpu_seconds: float
    cache: featurestore.FeatureCache
    startup_seconds: float = 0.0
    timings: list[TaskTiming] = field(default_factory=list)


def extract_files(
    files: pd.DataFrame, store: featurestore.FeatureStore, *, extractor: FeatureExtractor, settings: audio.AnalysisSettings,
    generation: featurestore.CacheGeneration, read_features: bool, address: str | None = None, progress: bool = True, desc: str = "features",
) -> FileExtraction:
    """Put every file's features in the content-keyed cache, extracting only what it lacks (Ray tasks).

    The cache is listed before Ray is touched: when every file is cached, Ray
    is neither started nor joined.

    Args:
        files: ``uri`` and ``fingerprint`` per file.
        store: the feature store whose cache to read and fill.
        extractor: the feature set.
        settings: the decode rules.
        generation: the cache generation of ``extractor`` and ``settings``.
        read_features: whether the driver takes in the files' features (to
            assemble the feature store) or only which cache file holds each
            content (for tasks that read their own, so the driver holds no
            features).
        address: the Ray cluster to use when there is work (see :func:`connect`).
        progress: show a progress bar over files.
        desc: the progress bar's label.
    """
    files = files[["uri", "fingerprint"]].reset_index(drop=True)
    files["sha256"] = featurestore.known_keys(store, files)
    needed = frozenset(files["sha256"]) - {""} if read_features else frozenset()
    cache = featurestore.FeatureCache.scan(store, generation, extractor.names, needed=needed)
    cached = cache.keys
    hits = pd.Series(cached.contains(files["sha256"]), index=files.index)
    todo = files.loc[~hits, ["uri", "fingerprint"]].drop_duplicates("uri").reset_index(drop=True)
    run: ShardedRun[featurestore.ShardOutcome] = ShardedRun()
    startup = 0.0
    if len(todo):
        connecting = time.perf_counter()
        connect(address)
        prestart(_extract_shard)
        startup = time.perf_counter() - connecting
        shards = featurestore.shard(todo, workers=cluster_cpus())
        # Only contents that another shard may hold need the claims actor (a
        # worker process of its own, and a round trip per batch of files: featurestore.CLAIM_BATCH_FILES).
        claims = _ContentClaims.remote() if any(s["may_repeat"].any() for s in shards) else None
        run = run_sharded(_extract_shard, shards, extractor, settings, generation, store, cached, claims, read_features, desc=desc, progress=progress)
        if claims is not None:
            ray.kill(claims)
    outcomes = run.outcomes
    keys = pd.concat([files.loc[hits, ["uri", "fingerprint", "sha256"]], *(o.keys for o in outcomes)], ignore_index=True)
    # Reused: known by fingerprint, or found in the cache by content (a copy
    # under another name); counted before this run's cache files join the index.
    reused = int(cached.contains(keys["sha256"]).sum())
    for outcome in outcomes:
        for uri, table in outcome.cache_tables.items():
            if read_features:
                cache.add(uri, table)
            else:
                cache.note(uri, table.column("sha256").to_pylist())
    featurestore.update_fingerprints(store, keys)
    rejected = pd.concat([o.rejected for o in outcomes], ignore_index=True) if outcomes else pd.DataFrame(columns=["uri", "sha256", "stage", "reason"])
    return FileExtraction(
        keys=keys, rejected=rejected, extracted=sum(o.extracted for o in outcomes), reused=reused,
        task_cpu_seconds=sum(o.cpu_seconds for o in outcomes), cache=cache, startup_seconds=startup, timings=run.timings,
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


def evaluate(
    datasets: dict[str, protocol.Dataset], tasks: list[protocol.Task], results_uri: str, *,
    storage_options: dict | None = None, address: str | None = None, progress: bool = True,
) -> EvaluationSummary:
    """Run every task whose result is not written yet; each writes its own Parquet file.

    When every result is written already, Ray is neither started nor joined.

    Args:
        datasets: the arrays per corpus (and pooled source).
        tasks: the protocol's tasks.
        results_uri: where each task's result file goes.
        storage_options: filesystem options for ``results_uri``.
        address: the Ray cluster to use when there is work (see :func:`connect`).
        progress: show a progress bar over tasks.
    """
    started = time.perf_counter()
    uris = {task.key: storage.join(results_uri, task.result_path()) for task in tasks}
    done = set(storage.list_files(results_uri, suffix=".parquet", storage_options=storage_options))
    todo = [task for task in tasks if uris[task.key] not in done]
    cpu, preparations = 0.0, 0
    if todo:
        connect(address)
        cpu, preparations = _run_tasks(datasets, todo, uris, storage_options=storage_options, progress=progress)
    return EvaluationSummary(
        tasks=len(tasks), reused=len(tasks) - len(todo), fits=len(todo) + preparations, task_cpu_seconds=cpu,
        wall_seconds=time.perf_counter() - started, result_uris=[uris[task.key] for task in tasks],
    )


def _run_tasks(datasets: dict[str, protocol.Dataset], todo: list[protocol.Task], uris: dict[str, str], *, storage_options: dict | None, progress: bool) -> tuple[float, int]:
    """Run ``todo`` on Ray, each task writing its result to ``uris[task.key]``.

    The datasets go into the object store once; every task gets references,
    never copies. Work shared by folds (the fcnn's source network) runs once
    per source corpus and seed and is passed along as a reference too.

    Returns:
        ``(CPU seconds of every task and shared preparation, number of shared preparations)``.
    """
    from crossemo import protocol  # see the note on imports at the top of this module

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
    with tqdm(total=len(todo), desc="tasks", unit="task", disable=not progress) as bar:
        while remaining:
            finished, remaining = ray.wait(remaining, num_returns=1)
            cpu += ray.get(finished[0])["cpu_seconds"]
            bar.update(1)
    cpu += sum(seconds for _, seconds in ray.get(list(shared.values())))
    return cpu, len(shared)


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


_CACHE_FILES: OrderedDict[str, pa.Table] = OrderedDict()
"""Feature cache files a worker has read, least recently used first.

Labelling shards follow speakers and extraction shards follow file sizes, so
one cache file holds files of many labelling shards; read once per worker,
it serves them all. A cache file never changes (its name is a digest of the
contents it holds), so keeping it is safe.
"""
CACHE_FILES_BYTES = 256 * 2**20
"""The most bytes of cache files a worker keeps (:data:`_CACHE_FILES`)."""


def _cache_file(uri: str, storage_options: dict | None) -> pa.Table:
    """The cache file at ``uri``, from this worker's memory when it read it before."""
    if uri in _CACHE_FILES:
        _CACHE_FILES.move_to_end(uri)
        return _CACHE_FILES[uri]
    table = _CACHE_FILES[uri] = storage.read_table(uri, storage_options=storage_options)
    while len(_CACHE_FILES) > 1 and sum(kept.nbytes for kept in _CACHE_FILES.values()) > CACHE_FILES_BYTES:
        _CACHE_FILES.popitem(last=False)
    return table


@ray.remote(num_cpus=1, max_retries=TASK_RETRIES)
def _label_shard(
    shard: Any, rows: pd.DataFrame, bundle_uri: str, model_id: str, rule: str, store: featurestore.FeatureStore, generation: featurestore.CacheGeneration,
    part_uri: str, storage_options: dict | None,
) -> dict[str, Any]:
    """Label one shard's files from the feature cache and write its part file; returns its counts.

    ``rows`` gives each file's ``sha256`` and ``cache_uri`` (the cache file
    holding its features or its rejection; empty when it has neither, with the
    ``stage`` and ``reason`` to report): the task reads only those files,
    each at most once per worker (:func:`_cache_file`).
    """
    from crossemo import prediction

    started = time.process_time()
    loaded = _bundle(bundle_uri, model_id, storage_options)
    cache = featurestore.FeatureCache(store, generation, list(loaded.metadata["feature_names"]))
    found = rows[rows["cache_uri"] != ""]
    for cache_uri in found["cache_uri"].unique():
        cache.add(cache_uri, _cache_file(cache_uri, store.storage_options))
    facts, values, cached_rejections = cache.contents(set(found["sha256"]))
    reasons = cached_rejections.set_index("sha256")
    with_reason = found[found["sha256"].isin(reasons.index) & ~found["sha256"].isin(facts.index)]
    rejected = [
        rows.loc[rows["cache_uri"] == "", ["uri", "stage", "reason"]],
        pd.DataFrame({"uri": with_reason["uri"], "stage": reasons.loc[with_reason["sha256"], "stage"].to_numpy(), "reason": reasons.loc[with_reason["sha256"], "reason"].to_numpy()}),
    ]
    vectors = dict(zip(found["uri"], found["sha256"]))
    vectors = {uri: values[facts.index.get_loc(sha)] for uri, sha in vectors.items() if sha in facts.index}
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
    rates = facts.loc[found.loc[found["uri"].isin(usable["uri"]), "sha256"], "sampling_rate"]
    return {
        "labelled": len(out), "rejected": len(rejected_frame), "cpu_seconds": time.process_time() - started,
        "below_rate": _below_rate(rates, int(loaded.metadata["decode"]["analysis_rate"])),
    }


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
    windows, rejected, rates = [], [], []
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
        # From the header alone: cached windows do not record the file's rate.
        with audio.open_stream(uri, storage_options=storage_options) as stream:
            rates.append(stream.sampling_rate)
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
    return {
        "labelled": len(per_file), "rejected": len(rejected_frame), "cpu_seconds": time.process_time() - started,
        "below_rate": _below_rate(rates, settings.analysis_rate),
    }


def _count_below_rate(outcomes: list[dict[str, Any]], total: Counter) -> None:
    """Add the labelling tasks' files below the analysis rate, by rate, to ``total``."""
    for outcome in outcomes:
        total.update(outcome["below_rate"])


def _below_rate(rates: Any, analysis_rate: int) -> dict[int, int]:
    """How many of the files labelled were recorded at each rate below the analysis rate (upsampled: their upper band is empty)."""
    return dict(Counter(int(rate) for rate in rates if rate < analysis_rate))


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
    kept_labels: int
    """Labels of replaced parts' files this run was not given that were kept (:func:`crossemo.prediction.unlisted_files`)."""
    earlier_labels: int
    """Labels in the output of files this run was not given (earlier runs'); ``labelled``, ``rejected``, ``emotions`` and ``windows`` count this run's files only."""
    emotions: dict[str, int]
    windows: int
    wall_seconds: float
    ray_started: bool
    reasons: dict[str, int] = field(default_factory=dict)
    """This run's rejected files by reason, commonest first."""
    below_rate: dict[int, int] = field(default_factory=dict)
    """Files this run labelled that were recorded below the model's analysis rate, by their rate in Hz (shards reused from earlier runs not counted)."""
    dropped_labels: int = 0
    """Labels of files this run was not given that went with their replaced part (another model or rule gave them: :func:`crossemo.prediction.unlisted_files`)."""
    earlier_foreign: int = 0
    """Of ``earlier_labels``, those another model or segmentation rule gave (the output mixes them; ``model_id`` tells models apart, ``windows`` rows labelled from windows)."""


def _earlier_rejections(folder: str, *, storage_options: dict | None) -> pd.DataFrame:
    """The files an earlier run could not read, from ``folder``'s rejections file (none if it has none or it cannot be read as one)."""
    from crossemo import prediction

    uri = storage.join(folder, prediction.REJECTED_FILE)
    try:
        frame = storage.read_frame(uri, storage_options=storage_options)
    except (FileNotFoundError, pa.ArrowException):
        return pd.DataFrame(columns=prediction.REJECTED_COLUMNS)
    if not set(prediction.REJECTED_COLUMNS) <= set(frame.columns):
        return pd.DataFrame(columns=prediction.REJECTED_COLUMNS)
    # Later stages' rejections belong to the part that recorded them, and go with it.
    return frame.loc[frame["stage"] == "read", prediction.REJECTED_COLUMNS].reset_index(drop=True)


def _membership(uris: pd.Series) -> Callable[[pd.Series], np.ndarray]:
    """A test of which URIs are among ``uris``, for many small batches.

    A sorted array of the URIs' references, searched: ``Series.isin`` would
    hash every one of ``uris`` again for each batch, and a set holds several
    times the array's memory, both in the driver's heap for as long as it lives.
    """
    # As text: a missing URI (a foreign or damaged part) must not stop the comparison.
    listed = np.sort(uris.astype(str).to_numpy(dtype=object))

    def among(batch: pd.Series) -> np.ndarray:
        values = batch.astype(str).to_numpy(dtype=object)
        if not len(listed) or not len(values):
            return np.zeros(len(values), dtype=bool)
        return listed[np.searchsorted(listed, values).clip(max=len(listed) - 1)] == values

    return among


def _keep_unlisted_labels(
    stale: list, files: pd.DataFrame, covered: set[str], *, model_id: str, rule: str, out: str, storage_options: dict | None,
) -> dict[str, int]:
    """Move the labels of stale parts' files this run was not given into parts of their own, before the stale parts go.

    Each kept file's rows (and windows) are copied as they were, under a part
    named by the key of the files it now covers, so a later run that lists
    them finds them as any other part. A file keeps no label from here when
    another part holds it (its row is there already). A file that several
    stale parts record (left by a killed run) keeps the row of the part
    written last (the newest record of it; by name when two were written
    at once): every kept row is written before any stale part goes, so a
    run killed while removing them resumes to the labels a clean run gives.
    Dropping such a file instead is a choice no later run could repeat once
    one of its parts was gone.

    Returns:
        the names of the parts written, with the labels each keeps.
    """
    from crossemo import prediction

    candidates = [(part, prediction.unlisted_files(part, files, model_id=model_id, rule=rule, exclude=covered)) for part in stale]
    candidates = [(part, rows) for part, rows in candidates if len(rows)]
    if not candidates:
        return {}
    written = {part.uri: storage.modified(part.uri, storage_options=storage_options) for part, _ in candidates}
    candidates.sort(key=lambda candidate: (-written[candidate[0].uri], candidate[0].uri))
    wanted = set().union(*(set(rows["uri"]) for _, rows in candidates))
    # Parts this run left alone (none of their files listed) are not in
    # ``covered``: a file one of them holds (a newer copy a killed run wrote) keeps that row.
    stale_uris = {part.uri for part in stale}
    for part in prediction.read_parts(storage.join(out, "predictions"), storage_options=storage_options):
        if part.uri not in stale_uris:
            wanted.difference_update(part.files["uri"])
    kept: dict[str, int] = {}
    for part, rows in candidates:
        rows = rows[rows["uri"].isin(wanted)].reset_index(drop=True)
        if rows.empty:
            continue
        wanted.difference_update(rows["uri"])  # kept once, from the newest part that records it
        shard = prediction.Shard(prediction.shard_key(rows, model_id=model_id, rule=rule), rows)
        windows = storage.join(out, "segments", part.part_name())
        if storage.exists(windows, storage_options=storage_options):
            frame = prediction.read_part(windows, storage_options=storage_options)
            storage.write_frame(frame[frame["uri"].isin(rows["uri"])].reset_index(drop=True), storage.join(out, "segments", shard.part_name()), storage_options=storage_options)
        labels = prediction.read_part(part.uri, storage_options=storage_options)
        labels = labels[labels["uri"].isin(rows["uri"])].reset_index(drop=True)
        # The part last: as a labelling task writes them, so a killed run leaves whole parts.
        storage.write_frame(
            labels, storage.join(out, "predictions", shard.part_name()), storage_options=storage_options,
            metadata=prediction.part_metadata(shard, rule=rule, rejected=part.rejected[part.rejected["uri"].isin(rows["uri"])]),
        )
        kept[shard.part_name()] = len(labels)
    return kept


def _remove_unowned_windows(out: str, *, storage_options: dict | None) -> None:
    """Remove the windows of parts that were never written (a run killed between a segment task's two writes).

    A task writes its windows before its part, so that a part never lacks
    them; windows left without a part belong to no label, and a re-run with
    other files writes its own under another name, which would double them.
    """
    from crossemo import prediction

    owned = {uri.rsplit("/", 1)[-1] for uri in prediction.part_uris(storage.join(out, "predictions"), storage_options=storage_options)}
    for uri in prediction.part_uris(storage.join(out, "segments"), storage_options=storage_options):
        if uri.rsplit("/", 1)[-1] not in owned:
            storage.remove(uri, storage_options=storage_options)


def _extract_and_label(
    wave: list, bundle_uri: str, model_id: str, rule: str, store: featurestore.FeatureStore, extractor: FeatureExtractor, settings: audio.AnalysisSettings,
    generation: featurestore.CacheGeneration, folder: str, address: str | None, storage_options: dict | None, progress: bool, of: str,
) -> tuple[list, int]:
    """Extract one wave's files into the cache, then send out a labelling task per shard; returns the tasks (not awaited) and the files extracted."""
    files = pd.concat([shard.files for shard in wave], ignore_index=True)
    extraction = extract_files(files, store, extractor=extractor, settings=settings, generation=generation, read_features=False, address=address, progress=progress, desc="features" + of)
    connect(address)  # labelling runs on Ray even when every file was cached
    keys = extraction.keys.drop_duplicates("uri").set_index("uri")["sha256"]
    failures = extraction.rejected.drop_duplicates("uri").set_index("uri")
    pending = []
    for shard in wave:
        rows = pd.DataFrame({"uri": shard.files["uri"]})
        rows["sha256"] = rows["uri"].map(keys).fillna("")
        rows["cache_uri"] = extraction.cache.locate(rows["sha256"])
        # A file with no cache entry could not be read (or its content was rejected this run without caching).
        rows["stage"] = rows["uri"].map(failures["stage"]).fillna("read") if len(failures) else "read"
        rows["reason"] = rows["uri"].map(failures["reason"]).fillna("no features") if len(failures) else "no features"
        pending.append(_label_shard.remote(shard, rows, bundle_uri, model_id, rule, store, generation, storage.join(folder, shard.part_name()), storage_options))
    return pending, extraction.extracted


def label_files(
    listing: Any, loaded: Any, bundle_uri: str, out: str, *, store: featurestore.FeatureStore, extractor: FeatureExtractor,
    settings: audio.AnalysisSettings, segmentation: Any = None, address: str | None = None, storage_options: dict | None = None, progress: bool = True,
) -> LabellingSummary:
    """Label every listed file with a loaded bundle, skipping shards already written; Ray starts only if there is work.

    Shards go in waves of at most :data:`crossemo.prediction.MAX_WAVE_FILES`
    files, each extracted, then labelled while the next is extracted, so the
    driver holds at most two waves' tasks, content keys and cache locations,
    and the store's content index (:func:`crossemo.prediction.waves`).

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
    if segmentation is not None:  # a whole-file run reads no windows (a part it replaces goes with them unread)
        prediction.check_windows(storage.join(out, "segments"), storage_options=storage_options)
    valid, stale = prediction.still_valid(prediction.read_parts(folder, storage_options=storage_options), files, model_id=shard_model, rule=rule, per_speaker=per_speaker)
    covered = set().union(*(set(part.files["uri"]) for part in valid)) if valid else set()
    reused = len(valid)
    del valid  # every valid part's list of files: only their URIs (covered) are needed from here
    shards = prediction.plan_shards(files[~files["uri"].isin(covered)], model_id=shard_model, rule=rule, per_speaker=per_speaker)
    batches = list(prediction.waves(shards, max_files=prediction.MAX_WAVE_FILES))
    extracted: int | None = None
    generation = featurestore.CacheGeneration.of(extractor, settings)
    if batches and segmentation is not None:
        connect(address)
        extractor_ref = ray.put(extractor)  # once for every wave's segment tasks
    # One wave's labelling runs while the next wave is extracted (its tasks
    # are queued first, so they go first): cores stay busy across waves, and
    # the driver holds at most two waves' tasks.
    labelling: tuple[list, list[int], str] | None = None
    below_rate: Counter = Counter()  # folded in wave by wave: the driver keeps no task's outcome
    for number, wave in enumerate(batches, 1):
        of = f" {number}/{len(batches)}" if len(batches) > 1 else ""
        if segmentation is not None:
            pending = [
                _label_segments_shard.remote(shard, segmentation, bundle_uri, model_id, rule, store, extractor_ref, settings, generation, out, storage_options)
                for shard in wave
            ]
        else:
            pending, wave_extracted = _extract_and_label(
                wave, bundle_uri, model_id, rule, store, extractor, settings, generation, folder, address, storage_options, progress, of,
            )
            extracted = (extracted or 0) + wave_extracted
        if labelling is not None:
            _count_below_rate(_gather(*labelling, progress), below_rate)
        labelling = (pending, [len(shard.files) for shard in wave], ("files" if segmentation is not None else "labels") + of)
    if labelling is not None:
        _count_below_rate(_gather(*labelling, progress), below_rate)
    # A stale part this run wrote again under its own name (the same files,
    # relabelled) is the new one: removing it would lose its labels.
    written = {shard.part_name() for shard in shards}
    kept = _keep_unlisted_labels(stale, files, covered, model_id=shard_model, rule=rule, out=out, storage_options=storage_options)
    written |= kept.keys()
    removed = [part for part in stale if part.part_name() not in written]
    for part in removed:
        # Windows first: a run killed in between leaves a part without windows
        # (a re-run with the same files removes it), never windows no part owns.
        windows = storage.join(out, "segments", part.part_name())
        if storage.exists(windows, storage_options=storage_options):
            storage.remove(windows, storage_options=storage_options)
        storage.remove(part.uri, storage_options=storage_options)
    _remove_unowned_windows(out, storage_options=storage_options)
    # Part by part, so the driver never holds every part's list of files. The
    # file of rejections covers the whole output; the counts, this run's files.
    rejections = [listing.missing[prediction.REJECTED_COLUMNS]]
    given = _membership(files["uri"])
    # A listed file that is missing was given too: a label a part still holds for it is not "another run's".
    missing = _membership(listing.missing["uri"])
    reasons = listing.missing["reason"].value_counts()
    # Files an earlier run could not even read (a dangling link, a table's
    # missing file) are in no part: their rows stay until a run lists them.
    earlier_unread = _earlier_rejections(folder, storage_options=storage_options)
    earlier_unread = earlier_unread[~given(earlier_unread["uri"]) & ~missing(earlier_unread["uri"])]
    # Files of removed parts this run was not given: unless a part still holds them, their labels went with their part.
    # A part records its rejected files too, which had no label to lose.
    labelled_in = [part.files.loc[~part.files["uri"].isin(part.rejected["uri"]), "uri"] for part in removed if "uri" in part.files]
    dropped = pd.concat(labelled_in or [pd.Series(dtype=str)]).astype(str).drop_duplicates()
    dropped = dropped[~given(dropped) & ~missing(dropped)]
    emotions: dict[str, int] = {}
    windows = earlier = foreign = 0
    columns: dict[pa.Schema, list[str]] = {}
    for part in prediction.read_parts(folder, storage_options=storage_options):
        columns.setdefault(part.columns, []).append(part.uri)
        rejections.append(part.rejected)
        if "uri" in part.files:
            earlier_unread = earlier_unread[~earlier_unread["uri"].isin(part.files["uri"])]
            dropped = dropped[~dropped.isin(part.files["uri"])]
        reasons = reasons.add(part.rejected.loc[given(part.rejected["uri"]), "reason"].value_counts(), fill_value=0)
        # Only the columns the summary counts: a part can hold many carried columns.
        wanted = ["uri", "emotion", "windows"] if segmentation is not None else ["uri", "emotion"]
        with prediction.reading_part(part.uri), storage.open_parquet(part.uri, storage_options=storage_options) as parquet:
            labels = parquet.read(columns=[*wanted, *(["model_id"] if "model_id" in part.columns.names else [])]).to_pandas()
        mine = given(labels["uri"])
        others = ~mine & ~missing(labels["uri"])
        earlier += int(others.sum())
        if part.rule != rule or "model_id" not in labels:
            foreign += int(others.sum())
        else:
            foreign += int((labels.loc[others, "model_id"] != model_id).sum())
        for emotion, n in labels.loc[mine, "emotion"].value_counts().items():
            emotions[str(emotion)] = emotions.get(str(emotion), 0) + int(n)
        windows += int(labels.loc[mine, "windows"].sum()) if "windows" in labels else 0
    rejections.append(earlier_unread)
    # Last: the loop above takes each part's columns as they are (a part lacking ``windows`` reads without it).
    prediction.align_columns(folder, predictions=folder, columns=columns, storage_options=storage_options)
    if segmentation is not None:
        prediction.align_columns(storage.join(out, "segments"), predictions=folder, storage_options=storage_options)
    storage.write_frame(pd.concat(rejections, ignore_index=True), storage.join(folder, prediction.REJECTED_FILE), storage_options=storage_options)
    return LabellingSummary(
        files=len(files) + len(listing.missing), labelled=sum(emotions.values()), rejected=int(reasons.sum()),
        reused_shards=reused, shards=len(shards), extracted=extracted, removed_parts=len(removed), kept_labels=sum(kept.values()),
        earlier_labels=earlier, earlier_foreign=foreign, dropped_labels=len(dropped), emotions=emotions, windows=windows, wall_seconds=time.perf_counter() - started, ray_started=bool(shards),
        reasons={str(reason): int(n) for reason, n in reasons.sort_values(ascending=False, kind="stable").items()}, below_rate=dict(sorted(below_rate.items())),
    )
