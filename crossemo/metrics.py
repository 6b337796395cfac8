"""The figures crossemo reports, each defined once: accuracy, UAR, chance, spread, intervals.

* **Accuracy**: the share of test utterances labelled right (the study's figure).
* **UAR** (unweighted average recall): the mean recall over the **target's
  classes**, not the fold's. A class absent from a fold's test rows counts as
  recall 0, so chance is ``1 / classes`` in every fold (a constant prediction
  scores exactly that whatever the fold holds) and a fold whose test speakers
  hold one emotion cannot score a "UAR" of 100 by always naming it.
* **Pooled UAR**: the same over all test utterances of all folds of a cell at
  once, which no single degenerate fold can sway.
* **Spread**: sample standard deviations (``ddof = 1``) over folds, and over
  seeds where a run has several.
* **Paired interval**: a 95 % percentile bootstrap of the mean of per-fold
  differences (``scipy.stats.bootstrap``, seeded), folds being the held-out
  speakers; undefined with fewer than :data:`MIN_FOLDS_FOR_INTERVAL` folds.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import stats
from sklearn.metrics import recall_score

from crossemo.labels import EMOTIONS

MIN_FOLDS_FOR_INTERVAL: int = 3
"""Fewer paired folds than this give no interval: a bootstrap of two values says nothing."""

BOOTSTRAP_RESAMPLES: int = 9999


def target_classes(labels: Iterable[str]) -> list[str]:
    """The classes a target holds, in :data:`~crossemo.labels.EMOTIONS` order: what its folds are scored over."""
    present = set(labels)
    return [e for e in EMOTIONS if e in present]


def chance(classes: list[str]) -> float:
    """Chance level of UAR (and of accuracy on balanced classes) as a fraction: ``1 / len(classes)``."""
    return 1.0 / len(classes) if classes else float("nan")


def score(true: np.ndarray, predicted: np.ndarray, *, classes: list[str]) -> tuple[float, float]:
    """Accuracy and UAR of one set of test utterances.

    Args:
        true: the labels, 1-D.
        predicted: the predictions, same length.
        classes: the classes UAR averages recall over (the target's).

    Returns:
        ``(accuracy, uar)`` as fractions; NaN for an empty set.
    """
    if len(true) == 0:
        return float("nan"), float("nan")
    accuracy = float(np.mean(np.asarray(true) == np.asarray(predicted)))
    uar = float(recall_score(true, predicted, labels=classes, average="macro", zero_division=0))
    return accuracy, uar


def sample_std(values: np.ndarray) -> float:
    """Standard deviation with ``ddof = 1``; NaN for fewer than two values."""
    values = np.asarray(values, dtype=float)
    return float(np.std(values, ddof=1)) if values.size > 1 else float("nan")


def paired_interval(differences: np.ndarray, *, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of the mean of paired per-fold differences.

    Args:
        differences: one difference per fold (method minus reference).
        confidence: the interval's coverage.
        seed: the bootstrap's seed, so a report is reproducible.

    Returns:
        ``(low, high)``; NaN for fewer than :data:`MIN_FOLDS_FOR_INTERVAL`
        folds; both equal the difference when every fold has the same one.
    """
    differences = np.asarray(differences, dtype=float)
    differences = differences[np.isfinite(differences)]
    if differences.size < MIN_FOLDS_FOR_INTERVAL:
        return float("nan"), float("nan")
    if np.ptp(differences) == 0:
        return float(differences[0]), float(differences[0])
    result = stats.bootstrap(
        (differences,), np.mean, confidence_level=confidence, n_resamples=BOOTSTRAP_RESAMPLES,
        method="percentile", rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)
