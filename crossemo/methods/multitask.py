"""``multitask``: multi-task learning with one class per (emotion, corpus) (the study's section 3.3).

The study's Random Forest, but a source row and a target row of the same
emotion get different classes: ``anger@source`` and ``anger@target``. The
trees' upper splits still learn from the whole source, while the leaves
can separate the target's own way of expressing each emotion. At
prediction time only the target's classes count: the emotion is the argmax
of the forest's ``predict_proba`` over the ``…@target`` columns, so a
source class is never predicted (and neither is an emotion the target's
training speaker lacks). The method's ``predict_proba`` is those columns
renormalised to sum to 1, an emotion's probability given that the row is
the target's; not the sum of its source and target classes, whose argmax
could be an emotion the prediction rule never picks.

Oversampling (the study: "we oversampled examples from the target dataset
until we got equal distributions in both datasets"): read, as the project
specifies, as equal *row counts* per corpus. With n source rows and m < n
target training rows, every target row is repeated ⌊n / m⌋ times, and the
remaining n mod m copies go to distinct target rows drawn without
replacement by a generator seeded from ``random_state``. The result has
exactly n target rows, each original row appearing ⌊n / m⌋ or ⌈n / m⌉
times; whole-copy repetition keeps the oversampled emotion mix as close to
the speaker's own as possible. When the target already has at least as many
rows as the source nothing is oversampled. (The phrase could also mean equal
counts per emotion; that is not what this method does.)
"""

from __future__ import annotations

import numpy as np

from crossemo.methods._common import MostProbableMixin, class_columns, derive_seed, ordered_labels
from crossemo.methods._forest import ForestMethod

SEPARATOR = "@"
SOURCE_TAG = "source"
TARGET_TAG = "target"
_OVERSAMPLING = 1
"""Purpose constant for :func:`derive_seed`."""


def corpus_label(emotion: str, corpus: str) -> str:
    """The multi-task class of an emotion in a corpus, e.g. ``anger@target``."""
    return f"{emotion}{SEPARATOR}{corpus}"


def oversample_indices(n_target: int, n_source: int, rng: np.random.Generator) -> np.ndarray:
    """Indices into the target rows that give ``max(n_target, n_source)`` rows.

    Every index appears ``n_source // n_target`` times, plus one more for
    ``n_source % n_target`` distinct indices drawn without replacement.
    """
    if n_target <= 0:
        raise ValueError("oversampling needs at least one target row")
    if n_target >= n_source:
        return np.arange(n_target)
    repeats, remainder = divmod(n_source, n_target)
    extra = np.sort(rng.choice(n_target, size=remainder, replace=False))
    return np.concatenate([np.tile(np.arange(n_target), repeats), extra])


class MultiTask(MostProbableMixin, ForestMethod):
    """Random Forest with separate source and target classes, the target oversampled to the source's size.

    Parameters:
        n_estimators: number of trees (the study: 1000).
        max_depth: maximal depth of a tree (the study: 10).
        max_features: features tried per split, as in scikit-learn.
        random_state: seed of the forest and of the oversampling.

    Attributes:
        target_indices_: the target training rows (positions among them) after oversampling.
        corpus_counts_: ``{"source": rows, "target": rows after oversampling}``.
        target_columns_: columns of ``forest_.predict_proba`` that belong to target classes,
            in the order of ``classes_``.
        classes_: the target's training emotions, the only labels predicted.
        forest_, n_features_in_: as for ``rf``.
    """

    def _training_matrix(self, X, y, is_target, speakers):
        if not is_target.any():
            raise ValueError("multitask needs the target speaker's training rows (is_target=True): it predicts only target classes")
        n_source = int((~is_target).sum())
        rng = np.random.default_rng(derive_seed(self.random_state, _OVERSAMPLING))
        self.target_indices_ = oversample_indices(int(is_target.sum()), n_source, rng)
        self.corpus_counts_ = {SOURCE_TAG: n_source, TARGET_TAG: len(self.target_indices_)}
        target_X, target_y = X[is_target][self.target_indices_], y[is_target][self.target_indices_]
        features = np.concatenate([X[~is_target], target_X])
        labels = np.concatenate([
            np.char.add(y[~is_target].astype(str), SEPARATOR + SOURCE_TAG),
            np.char.add(target_y.astype(str), SEPARATOR + TARGET_TAG),
        ])
        return features, labels

    def _predictable_classes(self, y, is_target):
        classes = ordered_labels(y[is_target])
        self.target_columns_ = np.array(class_columns([corpus_label(c, TARGET_TAG) for c in classes], self.forest_.classes_))
        return classes

    def _class_columns(self) -> np.ndarray:
        return self.target_columns_

    def predict_proba(self, X, *, speakers) -> np.ndarray:
        """The forest's probabilities of the target classes, renormalised; columns follow ``classes_``.

        A row whose probability mass is all on source classes gets equal shares.
        """
        proba = super().predict_proba(X, speakers=speakers)
        total = proba.sum(axis=1, keepdims=True)
        uniform = np.full_like(proba, 1.0 / proba.shape[1])
        return np.where(total > 0, proba / np.where(total > 0, total, 1.0), uniform)
