"""The study's Random Forest, and the base every forest-based method builds on.

The study uses one classifier throughout: a Random Forest with 1000 trees
and maximal depth 10. :func:`build_forest` makes it (always single-threaded:
the parallelism comes from Ray running many fits at once), and
:class:`ForestMethod` is a classifier that maps the training rows and the
test rows through two hooks and fits that forest on the result. ``rf``,
``norm_neutral``, ``norm_distribution``, ``speaker_norm`` and ``multitask``
are all forest methods that differ only in these hooks.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.utils.validation import check_is_fitted

from crossemo.methods._common import check_fit_inputs, check_predict_inputs, class_columns, ordered_labels

N_ESTIMATORS = 1000
"""The study's number of trees."""

MAX_DEPTH = 10
"""The study's maximal tree depth."""


def build_forest(*, n_estimators: int = N_ESTIMATORS, max_depth: int | None = MAX_DEPTH, max_features: str | int | float | None = "sqrt", random_state: int = 0) -> RandomForestClassifier:
    """The study's forest (unfitted), single-threaded and seeded."""
    return RandomForestClassifier(n_estimators=n_estimators, max_depth=max_depth, max_features=max_features, n_jobs=1, random_state=random_state)


class ForestMethod(ClassifierMixin, BaseEstimator):
    """A Random Forest on features that subclasses may transform first.

    Subclasses override :meth:`_training_matrix` (the training rows, and their
    labels, as the forest sees them) and :meth:`_test_matrix` (the test rows as
    the forest sees them); by default both pass the features through.

    Parameters:
        n_estimators: number of trees (the study: 1000).
        max_depth: maximal depth of a tree (the study: 10).
        max_features: features tried per split, as in scikit-learn.
        random_state: seed of the forest.

    Attributes:
        forest_: the fitted ``RandomForestClassifier``.
        classes_: the emotion labels the method can predict.
        n_features_in_: number of input features.
    """

    def __init__(self, *, n_estimators: int = N_ESTIMATORS, max_depth: int | None = MAX_DEPTH, max_features: str | int | float | None = "sqrt", random_state: int = 0):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.max_features = max_features
        self.random_state = random_state

    def _forest(self) -> RandomForestClassifier:
        return build_forest(n_estimators=self.n_estimators, max_depth=self.max_depth, max_features=self.max_features, random_state=self.random_state)

    def fit(self, X, y, *, is_target, speakers, X_unlabelled=None, speakers_unlabelled=None) -> ForestMethod:
        """Fit on the training rows (source and/or the target's training speaker)."""
        X, y, is_target, speakers = check_fit_inputs(X, y, is_target, speakers)
        self.n_features_in_ = X.shape[1]
        features, labels = self._training_matrix(X, y, is_target, speakers)
        self.forest_ = self._forest().fit(features, labels)
        self.classes_ = self._predictable_classes(y, is_target)
        return self

    def predict(self, X, *, speakers) -> np.ndarray:
        """Emotion labels for the target's test rows: the forest's own prediction.

        That is the most probable class, a tie going to the class whose name
        sorts first (the forest's column order), which may not be the first
        of the tied classes in ``classes_``; the study's results were made so.
        """
        return np.asarray(self.forest_.predict(self._forest_input(X, speakers))).astype(str)

    def predict_proba(self, X, *, speakers) -> np.ndarray:
        """Class probabilities of the target's test rows (the mean of the trees' leaf class shares), n × len(classes_), columns in ``classes_`` order."""
        return self.forest_.predict_proba(self._forest_input(X, speakers))[:, self._class_columns()]

    def _forest_input(self, X, speakers) -> np.ndarray:
        """The checked test rows as the fitted forest sees them."""
        check_is_fitted(self, "forest_")
        X, speakers = check_predict_inputs(X, speakers, self.n_features_in_)
        return self._test_matrix(X, speakers)

    def _class_columns(self) -> list[int]:
        """The column of ``forest_.predict_proba`` that holds each class of ``classes_``."""
        return class_columns(self.classes_, self.forest_.classes_)

    def _training_matrix(self, X: np.ndarray, y: np.ndarray, is_target: np.ndarray, speakers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return X, y

    def _test_matrix(self, X: np.ndarray, speakers: np.ndarray) -> np.ndarray:
        return X

    def _predictable_classes(self, y: np.ndarray, is_target: np.ndarray) -> np.ndarray:
        return ordered_labels(y)
