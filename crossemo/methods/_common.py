"""Helpers every method shares: input checks, label order, probabilities, seeds and safe scales.

The methods take the same arguments (see :mod:`crossemo.methods`), so the
checks that turn them into clean arrays, and the conventions every method
follows (labels in the study's order, probability columns in ``classes_``
order, seeds derived from ``random_state``), live here once.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from crossemo.labels import EMOTIONS


def check_fit_inputs(X, y, is_target, speakers) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate the training arguments of ``fit`` and return them as arrays.

    Returns:
        ``X`` as finite float64 of shape (n, d), ``y`` and ``speakers`` as str
        arrays of length n, ``is_target`` as a bool array of length n.

    Raises:
        ValueError: wrong shapes, lengths that disagree, no rows, or non-finite features.
    """
    X = check_features(X)
    n = X.shape[0]
    if n == 0:
        raise ValueError("fit needs at least one training row; got none")
    y = _as_str_vector(y, "y", n)
    speakers = _as_str_vector(speakers, "speakers", n)
    is_target = np.asarray(is_target)
    if is_target.shape != (n,):
        raise ValueError(f"is_target must have one entry per row ({n}); got shape {is_target.shape}")
    if is_target.dtype != bool:
        if not np.isin(is_target, (0, 1)).all():
            raise ValueError("is_target must be boolean (True for the target corpus's rows)")
        is_target = is_target.astype(bool)
    return X, y, is_target, speakers


def check_predict_inputs(X, speakers, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate the arguments of ``predict`` against the fitted feature count."""
    X = check_features(X)
    if X.shape[1] != n_features:
        raise ValueError(f"X has {X.shape[1]} features, but the method was fitted with {n_features}")
    return X, _as_str_vector(speakers, "speakers", X.shape[0])


def check_features(X) -> np.ndarray:
    """``X`` as a finite float64 matrix."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D array (rows × features); got {X.ndim} dimension(s)")
    if X.shape[1] == 0:
        raise ValueError("X has no feature columns")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinite values; the methods need finite features")
    return X


def _as_str_vector(values, name: str, n: int) -> np.ndarray:
    values = np.asarray(values)
    if values.shape != (n,):
        raise ValueError(f"{name} must have one entry per row ({n}); got shape {values.shape}")
    return values.astype(str)


def corpus_of(speakers) -> np.ndarray:
    """The corpus of every speaker id (``"emovo/f1"`` → ``"emovo"``; an id without ``/`` is its own corpus)."""
    return np.array([str(speaker).split("/", 1)[0] for speaker in np.asarray(speakers)], dtype=str)


def ordered_labels(labels: Iterable[str]) -> np.ndarray:
    """The distinct labels, the study's emotions first in their order, then any others sorted."""
    present = set(str(label) for label in labels)
    known = [e for e in EMOTIONS if e in present]
    return np.array(known + sorted(present - set(EMOTIONS)), dtype=str)


def class_columns(classes: Iterable[str], model_classes: Iterable[str]) -> list[int]:
    """The column of a fitted model's ``predict_proba`` (ordered as ``model_classes``) that holds each of ``classes``.

    Raises:
        ValueError: a class the model has no column for.
    """
    columns = {str(label): i for i, label in enumerate(model_classes)}
    missing = [str(label) for label in classes if str(label) not in columns]
    if missing:
        raise ValueError(f"the fitted model has no probability column for class(es) {missing}")
    return [columns[str(label)] for label in classes]


def normalised_rows(probabilities: np.ndarray) -> np.ndarray:
    """Probabilities as float64 rows that sum to 1 (a float32 softmax's rows do only within about 1e-7).

    Dividing by a row sum this close to 1 cannot reorder a row's float32
    values (distinct ones differ by far more than float64 rounding), so the
    most probable class stays the same.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    return probabilities / probabilities.sum(axis=1, keepdims=True)


class MostProbableMixin:
    """``predict`` as the class of ``classes_`` with the highest ``predict_proba`` (ties: the first in ``classes_``)."""

    def predict(self, X, *, speakers) -> np.ndarray:
        """The most probable emotion of every test row (ties: the first in ``classes_``)."""
        return self.classes_[np.argmax(self.predict_proba(X, speakers=speakers), axis=1)]


def check_emotions(y: np.ndarray, method: str) -> None:
    """Methods with one output unit per emotion accept only the study's four labels."""
    unknown = sorted(set(y) - set(EMOTIONS))
    if unknown:
        raise ValueError(f"{method} predicts the study's emotions {EMOTIONS}; unknown label(s) {unknown}")


def derive_seed(random_state: int, purpose: int) -> int:
    """An independent 63-bit seed for one purpose (``purpose`` is a small constant) of a method."""
    if isinstance(random_state, bool) or not isinstance(random_state, (int, np.integer)):
        raise ValueError(f"random_state must be an int; got {random_state!r}")
    if random_state < 0:
        raise ValueError(f"random_state must be non-negative; got {random_state}")
    state = np.random.SeedSequence([int(random_state), int(purpose)]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def safe_scale(std: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``std`` with (numerically) zero entries replaced by 1, so constant features stay finite.

    A constant column's computed std can be a rounding residue instead of an
    exact 0, so anything below a few ulps of the mean's magnitude counts as 0.
    """
    std = np.asarray(std, dtype=np.float64)
    tiny = std <= 10 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(mean))
    return np.where(tiny, 1.0, std)


def mean_and_scale(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and (population) std of ``X``, the std guarded by :func:`safe_scale`."""
    mean = X.mean(axis=0)
    return mean, safe_scale(X.std(axis=0), mean)


def check_unlabelled(X_unlabelled, speakers_unlabelled, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate the unlabelled rows ``fit`` may receive (the test speakers' features, never their labels).

    Returns:
        ``X_unlabelled`` as finite float64 of shape (m, d), ``m`` possibly 0,
        and its speaker ids as a str array of length m.

    Raises:
        ValueError: one of the two given without the other, another feature
            count than the training rows, or non-finite features.
    """
    if X_unlabelled is None and speakers_unlabelled is None:
        return np.empty((0, n_features)), np.empty(0, dtype=str)
    if X_unlabelled is None or speakers_unlabelled is None:
        raise ValueError("X_unlabelled and speakers_unlabelled go together: give both or neither")
    X_unlabelled = np.asarray(X_unlabelled, dtype=np.float64)
    if X_unlabelled.ndim == 2 and X_unlabelled.shape[0] == 0:
        return np.empty((0, n_features)), np.empty(0, dtype=str)
    X_unlabelled = check_features(X_unlabelled)
    if X_unlabelled.shape[1] != n_features:
        raise ValueError(f"X_unlabelled has {X_unlabelled.shape[1]} features, the training rows {n_features}")
    return X_unlabelled, _as_str_vector(speakers_unlabelled, "speakers_unlabelled", X_unlabelled.shape[0])


def target_weights(is_target: np.ndarray, *, target_share: float) -> np.ndarray:
    """Sample weights that give the target's training rows ``target_share`` of the total weight.

    Source rows weigh 1 each; the target's rows share ``target_share ÷ (1 −
    target_share)`` × the source's total, so a handful of target utterances
    is not drowned by a corpus. With only one kind of row, every row weighs 1.

    Raises:
        ValueError: ``target_share`` outside (0, 1).
    """
    if isinstance(target_share, (bool, str)) or not isinstance(target_share, (int, float, np.integer, np.floating)) or not 0.0 < target_share < 1.0:
        raise ValueError(f"target_share must be between 0 and 1 (exclusive); got {target_share!r}")
    weights = np.ones(is_target.shape[0])
    n_target, n_source = int(is_target.sum()), int((~is_target).sum())
    if n_target and n_source:
        weights[is_target] = n_source * target_share / (1.0 - target_share) / n_target
    return weights
