"""``norm_distribution``: normalisation based on feature distribution (the study's section 3.5), then the Random Forest.

The study brings each emotion's per-feature distribution in the source
close to that of the target's training data, with the target as the
baseline, by replacing every feature value with a bin index 0–4:

1. **Target bins.** For every feature, the range [min, max] of the target's
   training values is split into 5 equal-width bins, and every target value,
   of the training speaker and of the test speakers alike, is replaced by the
   index of its bin. Test values outside the training range go to the end
   bins (below the minimum: 0; above the maximum: 4); the maximum itself is
   in bin 4.
2. **Target shares.** For every emotion and feature, x0 … x4 are the shares
   of that emotion's target training rows in bins 0 … 4.
3. **Source ranks.** For every emotion and feature, that emotion's source
   rows are ranked by value (ties by row order), and the lowest x0 of them
   get 0, the next x1 get 1, and so on. With n source rows of the emotion,
   the number of rows given a bin up to k is round(n · (x0 + … + xk)),
   rounded half up, so the counts are whole numbers that sum to n exactly.
4. The study's Random Forest is fitted on the binned source and target
   training rows; test rows are binned as in step 1 and classified.

Readings of the study (it does not spell these out):

- The bins are defined on all the target's training rows, not per emotion:
  the test rows, whose emotion is unknown, must be binned the same way, and
  the study says all target instances in the first bin get 0. "For each
  emotion" applies to the shares (steps 2 and 3).
- A source emotion that the target's training speaker does not have gets
  the shares of all the target's training rows instead (the target's
  overall distribution); ``fallback_emotions_`` lists such emotions. An
  emotion only in the target needs no source mapping.
- A feature constant in the target's training rows has no range to split:
  every value of it, target or source, becomes 0, so it carries no
  information (which is what such a feature tells about the target).
- The number of bins is a parameter (``n_bins``, the study: 5).

Evidence (issue 11): unlike ``fcnn`` and ``dbn``, no reading here was chosen
by validation, because none is open in a way data could settle. The study
fixes the 5 bins, the shares per emotion and the forest; binning on all the
target's training rows is forced (a test row's emotion is unknown, so it
cannot be binned per emotion); the fallback for a source emotion the target
speaker lacks never fires on the shared corpora (every EMOVO and RAVDESS
speaker has all four emotions); and a constant feature has no range to bin.
Before and after are therefore the same reading.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import check_is_fitted

from crossemo.methods._common import ordered_labels
from crossemo.methods._forest import MAX_DEPTH, N_ESTIMATORS, ForestMethod

N_BINS = 5
"""The study's number of equal-width bins."""


def target_bins(X: np.ndarray, lower: np.ndarray, upper: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Bin index (0 … ``n_bins`` − 1) of every value, with equal-width bins over [lower, upper] per feature.

    Values below ``lower`` go to bin 0, values at or above ``upper`` to the
    last bin; a feature with ``lower == upper`` maps everything to 0.
    """
    X = np.asarray(X, dtype=np.float64)
    width = (upper - lower) / n_bins
    constant = ~(width > 0)
    position = (X - lower) / np.where(constant, 1.0, width)
    bins = np.clip(np.floor(position), 0, n_bins - 1).astype(np.int64)
    bins[:, constant] = 0
    return bins


def bin_counts(bins: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Rows per bin and feature, shape (``n_bins``, features)."""
    return np.stack([(bins == k).sum(axis=0) for k in range(n_bins)])


def match_source_bins(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Give source rows bin indices by rank so each bin's share matches the target's.

    Args:
        values: one emotion's source rows, shape (m, features).
        counts: that emotion's target training rows per bin, shape (n_bins, features);
            every column sums to the same positive number of rows.

    Returns:
        bin indices, shape (m, features): per feature, the lowest-ranked rows get
        bin 0, and the number of rows with a bin ≤ k is round(m · cumulative
        share up to k), rounded half up.
    """
    values = np.asarray(values, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.int64)
    m = values.shape[0]
    totals = counts.sum(axis=0)
    if m == 0:
        return np.zeros(values.shape, dtype=np.int64)
    if (totals <= 0).any():
        raise ValueError("every feature needs at least one target row to take shares from")
    # Integer half-up rounding of m · cumulative / total; the last bound is exactly m.
    bounds = (2 * np.cumsum(counts, axis=0) * m + totals) // (2 * totals)
    order = np.argsort(values, axis=0, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(m)[:, None], order.shape), axis=0)
    bins = np.zeros(values.shape, dtype=np.int64)
    for bound in bounds[:-1]:
        bins += ranks >= bound
    return bins


class NormDistribution(ForestMethod):
    """Random Forest on features binned by the target's distribution, per emotion.

    Parameters:
        n_bins: equal-width bins per feature (the study: 5).
        n_estimators: number of trees (the study: 1000).
        max_depth: maximal depth of a tree (the study: 10).
        max_features: features tried per split, as in scikit-learn.
        random_state: seed of the forest.

    Attributes:
        lower_, upper_: per-feature minimum and maximum of the target's training rows.
        target_counts_: per emotion of the target's training rows, that emotion's rows
            per bin and feature, shape (n_bins, features).
        overall_counts_: the same for all the target's training rows.
        fallback_emotions_: source emotions absent from the target's training rows,
            which took the target's overall shares.
        forest_, classes_, n_features_in_: as for ``rf``.
    """

    def __init__(self, *, n_bins: int = N_BINS, n_estimators: int = N_ESTIMATORS, max_depth: int | None = MAX_DEPTH, max_features: str | int | float | None = "sqrt", random_state: int = 0):
        super().__init__(n_estimators=n_estimators, max_depth=max_depth, max_features=max_features, random_state=random_state)
        self.n_bins = n_bins

    def _training_matrix(self, X, y, is_target, speakers):
        if not isinstance(self.n_bins, (int, np.integer)) or self.n_bins < 1:
            raise ValueError(f"n_bins must be a positive int; got {self.n_bins!r}")
        if not is_target.any():
            raise ValueError("norm_distribution needs the target speaker's training rows (is_target=True): their distribution is the baseline")
        target, target_y = X[is_target], y[is_target]
        self.lower_, self.upper_ = target.min(axis=0), target.max(axis=0)
        binned_target = self.transform(target)
        self.overall_counts_ = bin_counts(binned_target, self.n_bins)
        self.target_counts_ = {}
        for emotion in np.unique(target_y):
            self.target_counts_[str(emotion)] = bin_counts(binned_target[target_y == emotion], self.n_bins)
        self.fallback_emotions_ = [str(e) for e in ordered_labels(y[~is_target]) if str(e) not in self.target_counts_]
        binned_source = self.transform_source(X[~is_target], y[~is_target])
        features = np.empty(X.shape, dtype=np.float64)
        features[is_target] = binned_target
        features[~is_target] = binned_source
        return features, y

    def transform_source(self, X, y) -> np.ndarray:
        """Bin source rows by rank so that, per emotion and feature, their bin shares match the target's.

        An emotion the target's training rows lack takes the shares of all of them.
        """
        check_is_fitted(self, "target_counts_")
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y).astype(str)
        out = np.zeros(X.shape, dtype=np.int64)
        for emotion in np.unique(y):
            rows = y == emotion
            counts = self.target_counts_.get(str(emotion), self.overall_counts_)
            out[rows] = match_source_bins(X[rows], counts)
        return out

    def transform(self, X) -> np.ndarray:
        """Bin target rows (training or test) into the equal-width bins of the target's training range."""
        check_is_fitted(self, "lower_")
        return target_bins(X, self.lower_, self.upper_, self.n_bins)

    def _test_matrix(self, X, speakers):
        return self.transform(X).astype(np.float64)
