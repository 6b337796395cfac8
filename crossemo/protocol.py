"""The study's evaluation protocol: pairs, scenarios and held-out speaker folds.

A *pair* is an ordered (source, target). The source is one corpus or
several pooled (``emovo+ravdess``: their union, each utterance keeping its
corpus-prefixed speaker id). The folds are the target's speakers:

- scenario 1: train on the whole source, test on the whole target (one fold);
- scenario 2: train on one target speaker, test on the other target speakers;
  it does not depend on the source, so it runs once per target and every pair
  with that target shares it. Besides the baselines, the target-only twins of
  the transfer families (:data:`TARGET_ONLY_METHODS`) run here;
- scenario 3: train on the whole source plus one target speaker, test on the
  other target speakers. The transfer methods run in these folds.

:func:`plan` lists every task a run needs, each with a deterministic key made
from everything its result depends on (the data, the method and its
parameters, the fold, the seed, the code of the protocol, metrics and methods), so a re-run skips finished
tasks and a changed input recomputes only what it touches. :func:`run_task`
fits and scores one task; it is plain Python, and Ray only schedules it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import crossemo
from crossemo import methods
from crossemo.labels import EMOTIONS, METADATA_COLUMNS
from crossemo.metrics import score, target_classes

BASELINES = ("majority", "rf")
"""Always evaluated: the tables compare every method against them."""

STUDY_METHODS = ("dbn", "fcnn", "multitask", "norm_neutral", "norm_distribution")
"""The study's five transfer methods."""

TRANSFER_METHODS = (*STUDY_METHODS, "speaker_norm", "speaker_norm_linear", "coral", "subspace_alignment", "kmm_reweight", "self_training", "dann")
"""Run in scenario 3's folds; ``rf`` runs there too, as scenario 3 itself."""

TARGET_ONLY_METHODS = ("speaker_norm", "speaker_norm_linear", "self_training", "dann")
"""Target-only twins: besides ``rf``, these also run in scenario 2 (the target's training speaker alone).

One per classifier family of the transfer methods (the z-normalised forest,
the linear family with and without pseudo-labels, the network), so a
transfer method is compared with the same pipeline trained without any
source. Each runs in scenario 2 whenever it runs in scenario 3.
"""

SOURCE_SEPARATOR = "+"
"""Joins the corpora of a multi-source pair's source: ``emovo+ravdess``."""

RESULT_COLUMNS = [
    "key", "source", "target", "scenario", "method", "fold", "seed", "uri", "speaker", "true", "predicted",
    "accuracy", "uar", "n_train", "n_test", "cpu_seconds", "wall_seconds",
]
"""The columns of every result file, also of those written before files carried probabilities (the report needs no more)."""

PROBABILITY_COLUMNS = [f"p_{emotion}" for emotion in EMOTIONS]
"""Follow :data:`RESULT_COLUMNS` in result files: the model's probability of each of the study's emotions.

An emotion the model cannot predict (not in its ``classes_``) has probability 0.
"""

DETERMINISTIC_METHODS = frozenset({"majority"})
"""Methods whose result does not depend on the seed: with several seeds they still run once."""


class ProtocolError(ValueError):
    """The requested evaluation cannot run on these corpora."""


@dataclass(frozen=True)
class Dataset:
    """One corpus's features as arrays, ready for the object store.

    Attributes:
        corpus: corpus name.
        X: float32 features, one row per utterance.
        y: emotion labels.
        speakers: speaker ids, prefixed by the corpus so they are unique across corpora.
        uris: the utterances' audio URIs.
        content: SHA-256 of each utterance's audio bytes (``""`` in a feature
            store written before content keys were stored).
        digest: SHA-256 of everything above, the data's part of every task key.
    """

    corpus: str
    X: np.ndarray
    y: np.ndarray
    speakers: np.ndarray
    uris: np.ndarray
    content: np.ndarray
    digest: str

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Dataset:
        """Build from a feature-store table (metadata columns, then features)."""
        frame = frame.sort_values("uri", kind="stable").reset_index(drop=True)
        corpus = str(frame["corpus"].iloc[0])
        X = np.ascontiguousarray(frame.drop(columns=list(METADATA_COLUMNS), errors="ignore").to_numpy(dtype=np.float32))
        y = frame["emotion"].astype(str).to_numpy()
        speakers = (corpus + "/" + frame["speaker"].astype(str)).to_numpy()
        uris = frame["uri"].astype(str).to_numpy()
        content = frame["sha256"].astype(str).to_numpy() if "sha256" in frame else np.full(len(frame), "", dtype=object)
        hasher = hashlib.sha256(X.tobytes())
        for column in (y, speakers, uris, content):
            hasher.update("\n".join(column).encode())
        return cls(corpus, X, y, speakers, uris, content, hasher.hexdigest())

    def speaker_ids(self) -> list[str]:
        return sorted(set(self.speakers))

    @classmethod
    def union(cls, parts: list[Dataset]) -> Dataset:
        """Several corpora pooled as one source, named by their names joined with ``+``.

        Speaker ids keep their corpus prefix, so methods that treat corpora
        apart still can. The digest is made of the parts' digests.
        """
        digest = hashlib.sha256("\n".join(part.digest for part in parts).encode()).hexdigest()
        return cls(
            SOURCE_SEPARATOR.join(part.corpus for part in parts), np.concatenate([part.X for part in parts]),
            *(np.concatenate([getattr(part, name) for part in parts]) for name in ("y", "speakers", "uris", "content")), digest,
        )


@dataclass(frozen=True)
class Task:
    """One model fit and its scoring."""

    scenario: int
    method: str
    source: str | None
    target: str
    fold: str
    params: tuple[tuple[str, Any], ...] = ()
    seed: int = 0
    key: str = ""
    shared: str | None = field(default=None, compare=False)

    @property
    def pair(self) -> str:
        return f"{self.source or '-'}_{self.target}"

    def result_path(self) -> str:
        """Path of this task's result below ``<out>/results``: readable, and unique by key."""
        fold = re.sub(r"[^A-Za-z0-9._-]+", "-", self.fold)
        return f"{self.pair}/s{self.scenario}/{self.method}/{fold}.seed{self.seed}.{self.key[:16]}.parquet"


def parse_pairs(spec: str | Iterable[str], corpora: list[str]) -> list[tuple[str, str]]:
    """Turn ``all`` or ``SRC:TGT,…`` into ordered pairs of known corpora.

    A source may pool corpora: ``emovo+ravdess:emodb``; its name is written in
    the order of ``corpora``, so ``b+a`` and ``a+b`` are one pair. ``all``
    gives every ordered pair of two corpora and, with three corpora or more,
    one more pair per target whose source is all the others together.

    Raises:
        ProtocolError: no pair given (an empty ``--pairs``), a pair names an
            unknown corpus, a corpus twice, or the target among its sources.
    """
    spec = _listed(spec, "--pairs", "all or SOURCE:TARGET,…")
    if spec == ["all"]:
        pairs = [(s, t) for s in corpora for t in corpora if s != t]
        if not pairs:
            raise ProtocolError(f"need at least two corpora to form a pair; have {', '.join(corpora) or 'none'}")
        if len(corpora) >= 3:
            pairs += [(SOURCE_SEPARATOR.join(c for c in corpora if c != t), t) for t in corpora]
        return pairs
    pairs = []
    for item in spec:
        source, sep, target = item.partition(":")
        target = target.strip()  # as the sources are: " emovo : mine " names emovo and mine
        if not sep or not source or not target or ":" in target:
            raise ProtocolError(f"pair {item!r} is not SOURCE:TARGET")
        sources = [name.strip() for name in source.split(SOURCE_SEPARATOR)]
        if "" in sources:
            raise ProtocolError(f"pair {item!r} has an empty source corpus name (SOURCE is A or A+B+…)")
        for name in (*sources, target):
            if name not in corpora:
                raise ProtocolError(f"pair {item!r} names corpus {name!r}, which is not among {', '.join(corpora)}")
        if len(set(sources)) < len(sources):
            raise ProtocolError(f"pair {item!r} names a source corpus twice")
        if target in sources:
            raise ProtocolError(f"pair {item!r} uses {target} as both source and target")
        pairs.append((SOURCE_SEPARATOR.join(c for c in corpora if c in sources), target))
    return list(dict.fromkeys(pairs))


def _listed(spec: str | Iterable[str], flag: str, form: str) -> list[str]:
    """A comma-separated setting as its items; an empty one is refused, not read as ``all`` (which could cost hours)."""
    items = [part.strip() for part in spec.split(",")] if isinstance(spec, str) else [str(part).strip() for part in spec]
    items = [item for item in items if item]
    if not items:
        raise ProtocolError(f"{flag} is empty; give {form}")
    return items


def source_corpora(source: str) -> list[str]:
    """The corpora of a pair's source name (``"emovo+ravdess"`` → ``["emovo", "ravdess"]``)."""
    return source.split(SOURCE_SEPARATOR)


def with_sources(datasets: dict[str, Dataset], pairs: list[tuple[str, str]]) -> dict[str, Dataset]:
    """``datasets`` plus the pooled source of every multi-source pair, under its joined name."""
    pooled = {s: Dataset.union([datasets[c] for c in source_corpora(s)]) for s, _ in pairs if s not in datasets}
    return {**datasets, **pooled}


def parse_methods(spec: str | Iterable[str]) -> list[str]:
    """Turn ``all`` or ``m1,m2,…`` into the methods to run, baselines always included.

    Raises:
        ProtocolError: no method given (an empty ``--methods``), or an unknown method.
    """
    spec = _listed(spec, "--methods", "all or m1,m2,…")
    if spec == ["all"]:
        return [*BASELINES, *TRANSFER_METHODS]
    unknown = [name for name in spec if name not in methods.METHODS]
    if unknown:
        raise ProtocolError(f"unknown method {unknown[0]!r}; known: {', '.join(methods.METHODS)}")
    return list(dict.fromkeys([*BASELINES, *spec]))


@dataclass(frozen=True)
class Labels:
    """The labels and speakers of a corpus: all that :func:`check_pair` needs.

    A :class:`Dataset` has the same attributes; a manifest gives them before
    any feature exists, so bad pairs are refused before any Ray work.
    """

    corpus: str
    y: np.ndarray
    speakers: np.ndarray

    @classmethod
    def from_manifest(cls, corpus: str, utterances: pd.DataFrame) -> Labels:
        return cls(corpus, utterances["emotion"].astype(str).to_numpy(), (corpus + "/" + utterances["speaker"].astype(str)).to_numpy())

    @classmethod
    def union(cls, parts: list[Labels]) -> Labels:
        """Several corpora's labels pooled as one source (see :meth:`Dataset.union`)."""
        return cls(SOURCE_SEPARATOR.join(p.corpus for p in parts), np.concatenate([p.y for p in parts]), np.concatenate([p.speakers for p in parts]))


def check_speakers(name: str, method: Any, source: Labels | Dataset | None, target: Labels | Dataset, *, target_training: int | None = None) -> None:
    """Refuse a method whose training rows would hold fewer labelled speakers than it needs (:func:`crossemo.methods.speakers_needed`).

    Args:
        name: the method's name, for the message.
        method: the unfitted method, with its parameters.
        source: the source's labels (a manifest's) or dataset (what extraction
            kept); ``None`` when it trains on the target alone.
        target: the target's labels or dataset.
        target_training: how many target speakers it trains on (scenario 3:
            one); ``None``: all of them (``crossemo train``).

    Raises:
        ProtocolError: too few source or target speakers, named with the counts.
    """
    need_source, need_target = methods.speakers_needed(method)
    has_target = len(set(target.speakers)) if target_training is None else target_training
    if has_target < need_target:
        trained = f"trains on {has_target}" if target_training is not None else f"has {has_target}{_usable(target)}"
        raise ProtocolError(f"{name} needs at least {need_target} labelled speaker(s) of the target {target.corpus}, which {trained}")
    has_source = len(set(source.speakers)) if source is not None else 0
    if has_source < need_source:
        where = f"the source {source.corpus} has {has_source}{_usable(source)}" if source is not None else "there is no source"
        raise ProtocolError(f"{name} with these parameters needs at least {need_source} labelled source speaker(s); {where}")


def _usable(data: Labels | Dataset) -> str:
    """What a count of a dataset's speakers means: those extraction kept, which may be fewer than the manifest's."""
    return " with usable recordings (see the files rejected at extraction)" if isinstance(data, Dataset) else ""


def check_scenario_3(planned: dict[str, Any], pairs: list[tuple[Labels | Dataset, Labels | Dataset]]) -> None:
    """:func:`check_speakers` for every method of a run in every pair, as scenario 3 trains them (one target speaker).

    Run on the manifests' labels before any work, and again on the extracted
    features, where a speaker whose recordings were all rejected no longer counts.

    Args:
        planned: unfitted methods with their parameters, by name.
        pairs: ``(source, target)`` labels or datasets.

    Raises:
        ProtocolError: as :func:`check_speakers`.
    """
    for source, target in pairs:
        for name, method in planned.items():
            check_speakers(name, method, source, target, target_training=1)


def check_pair(source: Labels | Dataset, target: Labels | Dataset) -> list[str]:
    """Refuse a pair that cannot run; return warnings about one that can.

    Returns:
        warnings: classes only in the target, target speakers lacking a class
        (the fold training on one goes without it), and folds whose test
        speakers together lack a class (its recall counts as 0 in that
        fold's UAR; see :func:`score`).

    Raises:
        ProtocolError: the corpora share no class, the target has fewer than two
            speakers, or every source utterance is also in the target.
    """
    shared = set(source.y) & set(target.y)
    if not shared:
        raise ProtocolError(f"pair {source.corpus}:{target.corpus} shares no emotion class ({', '.join(sorted(set(source.y)))} vs {', '.join(sorted(set(target.y)))})")
    speakers = sorted(set(target.speakers))
    if len(speakers) < 2:
        raise ProtocolError(f"target {target.corpus} has {len(speakers)} speaker; scenarios 2 and 3 need at least two (one to train on, the rest to test)")
    warnings = [f"{source.corpus}:{target.corpus}: class {c} is only in the target" for c in sorted(set(target.y) - set(source.y))]
    if isinstance(source, Dataset) and isinstance(target, Dataset):
        left = len(usable_source(source, target).y)
        if not left:
            raise ProtocolError(
                f"pair {source.corpus}:{target.corpus}: all {len(source.y)} of the source's utterances are also in the target "
                "(the same recordings), so its source has nothing left to train on"
            )
        if left < len(source.y):
            warnings.append(
                f"{source.corpus}:{target.corpus}: {len(source.y) - left} of the source's {len(source.y)} utterances are also in the target "
                f"and are left out of its source, which trains on {left}"
            )
    classes = target_classes(target.y)
    for speaker in speakers:
        missing = [c for c in classes if c not in set(target.y[target.speakers == speaker])]
        if missing:
            warnings.append(f"{source.corpus}:{target.corpus}: speaker {speaker} has no {', '.join(missing)}; the fold training on it goes without")
        tested = target.speakers != speaker
        absent = [c for c in classes if c not in set(target.y[tested])]
        if absent:
            others = ", ".join(sorted(set(target.speakers[tested])))
            warnings.append(
                f"{source.corpus}:{target.corpus}: the fold training on {speaker} tests on {others}, who have no {', '.join(absent)}; "
                f"that fold's UAR counts {'it' if len(absent) == 1 else 'them'} as recall 0 (the pooled UAR does not depend on it)"
            )
    return warnings


@functools.cache
def evaluation_code_digest() -> str:
    """SHA-256 of the code a task's result depends on: this module, the metrics and every method.

    In every task key, so a changed method or definition recomputes its
    results while a change elsewhere (the report, the docs) reuses them.
    """
    package = Path(__file__).parent
    files = [package / "protocol.py", package / "metrics.py", *sorted((package / "methods").glob("*.py"))]
    hasher = hashlib.sha256()
    for path in files:
        hasher.update(path.name.encode() + b"\0" + path.read_bytes())
    return hasher.hexdigest()[:16]


def task_key(task: Task, datasets: dict[str, Dataset]) -> str:
    """Everything a task's result depends on, hashed."""
    payload = {
        "scenario": task.scenario, "method": task.method, "fold": task.fold, "params": task.params, "seed": task.seed,
        "source": datasets[task.source].digest if task.source else None,
        "target": datasets[task.target].digest, "version": crossemo.__version__, "code": evaluation_code_digest(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def method_params(method: str, overrides: dict[str, dict[str, Any]] | None) -> tuple[tuple[str, Any], ...]:
    """The non-default parameters for a method, as a hashable tuple."""
    return tuple(sorted((overrides or {}).get(method, {}).items()))


def run_seeds(seed: int, count: int) -> list[int]:
    """The seeds of a run: ``count`` consecutive seeds from ``seed``."""
    return list(range(seed, seed + count))


def plan(
    datasets: dict[str, Dataset],
    pairs: list[tuple[str, str]],
    method_names: list[str],
    *,
    seed: int = 0,
    seeds: int = 1,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> list[Task]:
    """Every task of the protocol for these pairs and methods, each exactly once.

    Args:
        datasets: the corpora.
        pairs: (source, target) pairs.
        method_names: methods to run (baselines included).
        seed: the first seed.
        seeds: how many seeds every stochastic method runs under, each a task
            of its own; :data:`DETERMINISTIC_METHODS` run under ``seed`` only.
        overrides: non-default parameters per method.

    Returns:
        tasks in a good submission order: the slowest kinds first.
    """
    tasks: list[Task] = []

    def add(scenario: int, method: str, source: str | None, target: str, fold: str) -> None:
        for task_seed in run_seeds(seed, 1 if method in DETERMINISTIC_METHODS else seeds):
            task = Task(scenario, method, source, target, fold, method_params(method, overrides), seed=task_seed, shared=method if method in SHARED_PREPARATIONS and scenario == 3 else None)
            tasks.append(Task(**{**task.__dict__, "key": task_key(task, datasets)}))

    target_only = [*BASELINES, *(m for m in TARGET_ONLY_METHODS if m in method_names)]
    for target in dict.fromkeys(t for _, t in pairs):
        for speaker in datasets[target].speaker_ids():
            for method in target_only:
                add(2, method, None, target, speaker)
    for source, target in pairs:
        add(1, "rf", source, target, "all")
        for speaker in datasets[target].speaker_ids():
            for method in method_names:
                if method != "majority":
                    add(3, method, source, target, speaker)
    order = {name: rank for rank, name in enumerate((
        "dbn", "fcnn", "multitask", "norm_distribution", "norm_neutral", "speaker_norm", "rf", "dann", "self_training",
        "kmm_reweight", "coral", "subspace_alignment", "speaker_norm_linear", "majority",
    ))}
    return sorted(tasks, key=lambda t: (order.get(t.method, 0), t.scenario))


def usable_source(source: Dataset, target: Dataset) -> Dataset:
    """The source a pair may train on: all but the recordings the target also holds.

    A recording in both corpora (identical bytes) would otherwise be learned
    from the source and tested on in the target.

    Returns:
        ``source`` itself when nothing is shared, else a copy without the shared rows.
    """
    shared = set(target.content) - {""}
    keep = np.array([key not in shared for key in source.content], dtype=bool)
    if keep.all():
        return source
    return Dataset(source.corpus, source.X[keep], source.y[keep], source.speakers[keep], source.uris[keep], source.content[keep], source.digest)


def split(task: Task, source: Dataset | None, target: Dataset) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Training and test arrays for a task. Test labels stay out of the training dict."""
    if source is not None:
        source = usable_source(source, target)
    if task.scenario == 1:
        assert source is not None
        train = training_rows(source, target, np.zeros(len(target.y), bool))
        test = {"X": target.X, "y": target.y, "speakers": target.speakers, "uris": target.uris}
        return train, test
    held_in = target.speakers == task.fold
    assert task.scenario == 2 or source is not None
    train = training_rows(source if task.scenario == 3 else None, target, held_in)
    test = {"X": target.X[~held_in], "y": target.y[~held_in], "speakers": target.speakers[~held_in], "uris": target.uris[~held_in]}
    return train, test


def training_rows(source: Dataset | None, target: Dataset, held_in: np.ndarray) -> dict[str, np.ndarray]:
    """A model's labelled rows: every source row (``is_target`` False), then the target's ``held_in`` rows.

    Args:
        source: the source, already without the target's recordings (see
            :func:`usable_source`), or ``None`` to train on the target alone.
        target: the target corpus.
        held_in: bool mask over the target's rows to train on.

    Returns:
        ``X`` (n × d), ``y``, ``is_target`` and ``speakers``, each of length n.
    """
    parts = [(target.X[held_in], target.y[held_in], np.ones(int(held_in.sum()), bool), target.speakers[held_in])]
    if source is not None:
        parts.insert(0, (source.X, source.y, np.zeros(len(source.y), bool), source.speakers))
    return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(("X", "y", "is_target", "speakers"))}


def fit_method(method: str, train: dict[str, np.ndarray], *, seed: int, params: tuple[tuple[str, Any], ...] = (), shared_model: Any = None, unlabelled: tuple[np.ndarray, np.ndarray] | None = None) -> Any:
    """Make and fit one method the way every evaluation task does (``crossemo train`` fits through it too).

    Args:
        method: a method name.
        train: the labelled rows (see :func:`training_rows`).
        seed: the method's ``random_state``.
        params: the method's other parameters.
        shared_model: fold-independent work (see :data:`SHARED_PREPARATIONS`), passed as ``source_model``.
        unlabelled: features (m × d) and speaker ids of audio from the target
            domain without labels (the test speakers' in an evaluation).

    Returns:
        the fitted method.
    """
    extra = {"source_model": shared_model} if shared_model is not None else {}
    model = methods.make_method(method, random_state=seed, **dict(params), **extra)
    X_unlabelled, speakers_unlabelled = unlabelled if unlabelled is not None else (None, None)
    return model.fit(train["X"], train["y"], is_target=train["is_target"], speakers=train["speakers"], X_unlabelled=X_unlabelled, speakers_unlabelled=speakers_unlabelled)


def prepare_fcnn_source(source: Dataset, *, seed: int, params: tuple[tuple[str, Any], ...]) -> Any:
    """Train the fcnn's network on the whole source once; every fold fine-tunes a copy."""
    from crossemo.methods.fcnn import SourceFCNN

    source_params = {k: v for k, v in params if k in SourceFCNN().get_params()}
    return SourceFCNN(random_state=seed, **source_params).fit(source.X, source.y, speakers=source.speakers)


SHARED_PREPARATIONS: dict[str, Callable[..., Any]] = {"fcnn": prepare_fcnn_source}
"""Fold-independent work per source corpus, passed to the method as ``source_model``."""


def dry_run(method: str, params: dict[str, Any]) -> None:
    """Fit and apply ``method`` with ``params`` on a tiny made-up pair, through :func:`run_task`.

    Parameter *values* are checked only when a model is fitted; this finds a
    bad one (``n_estimators = 0``) before any real work, in well under a second.

    Raises:
        Exception: whatever the method raises for these parameters.
    """
    rng = np.random.default_rng(0)
    rows = [
        {"corpus": corpus, "speaker": speaker, "emotion": emotion, "uri": f"{corpus}/{speaker}/{emotion}{n}", **{f"f{d}": rng.normal() for d in range(4)}}
        for corpus in ("source", "target") for speaker in ("a", "b") for emotion in EMOTIONS for n in range(2)
    ]
    frame = pd.DataFrame(rows)
    datasets = {name: Dataset.from_frame(frame[frame["corpus"] == name]) for name in ("source", "target")}
    scenario = 2 if method in BASELINES else 3
    task = Task(scenario, method, "source" if scenario == 3 else None, "target", "target/a", tuple(sorted(params.items())))
    shared = SHARED_PREPARATIONS[method](datasets["source"], seed=0, params=task.params) if method in SHARED_PREPARATIONS else None
    run_task(task, datasets["source"] if scenario == 3 else None, datasets["target"], shared_model=shared)


def emotion_probabilities(probabilities: np.ndarray, classes: Iterable[str]) -> np.ndarray:
    """A method's class probabilities laid out over the study's emotions.

    Args:
        probabilities: the method's ``predict_proba``, shape (n, len(classes)).
        classes: the method's ``classes_``, the order of those columns.

    Returns:
        shape (n, len(EMOTIONS)), columns in :data:`~crossemo.labels.EMOTIONS`
        order; an emotion not among ``classes`` gets 0.

    Raises:
        ValueError: a class outside the study's emotions, or columns that do not match ``classes``.
    """
    classes = [str(label) for label in classes]
    unknown = sorted(set(classes) - set(EMOTIONS))
    if unknown:
        raise ValueError(f"result files hold probabilities of the study's emotions {EMOTIONS}; the model has class(es) {unknown}")
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] != len(classes):
        raise ValueError(f"predict_proba gave shape {probabilities.shape}; expected one column per class of {classes}")
    spread = np.zeros((probabilities.shape[0], len(EMOTIONS)))
    spread[:, [EMOTIONS.index(label) for label in classes]] = probabilities
    return spread


def run_task(task: Task, source: Dataset | None, target: Dataset, *, shared_model: Any = None) -> pd.DataFrame:
    """Fit one method on a task's training rows and score it on its test rows.

    Returns:
        one row per test utterance with :data:`RESULT_COLUMNS` and
        :data:`PROBABILITY_COLUMNS`; ``accuracy`` and ``uar`` are the fold's
        (see :func:`score`), over the target's classes.
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    train, test = split(task, source, target)
    # The test rows' features, never their labels: adapting methods learn the target domain from them.
    model = fit_method(task.method, train, seed=task.seed, params=task.params, shared_model=shared_model, unlabelled=(test["X"], test["speakers"]))
    predicted = np.asarray(model.predict(test["X"], speakers=test["speakers"])).astype(str)
    probabilities = emotion_probabilities(model.predict_proba(test["X"], speakers=test["speakers"]), model.classes_)
    accuracy, uar = score(test["y"], predicted, classes=target_classes(target.y))
    frame = pd.DataFrame({
        "uri": test["uris"], "speaker": test["speakers"], "true": test["y"], "predicted": predicted,
    })
    frame.insert(0, "seed", task.seed)
    frame.insert(0, "fold", task.fold)
    frame.insert(0, "method", task.method)
    frame.insert(0, "scenario", task.scenario)
    frame.insert(0, "target", task.target)
    frame.insert(0, "source", task.source or "")
    frame.insert(0, "key", task.key)
    frame["accuracy"], frame["uar"] = accuracy, uar
    frame["n_train"], frame["n_test"] = len(train["y"]), len(test["y"])
    frame[PROBABILITY_COLUMNS] = probabilities
    frame["cpu_seconds"] = time.process_time() - cpu_started
    frame["wall_seconds"] = time.perf_counter() - started
    return frame[RESULT_COLUMNS + PROBABILITY_COLUMNS]
