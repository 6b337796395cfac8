"""``majority``: the study's trivial baseline, always the most frequent training class.

Table 2 of the study reports it next to the Random Forest for every
scenario. The most frequent label among all the training rows is predicted
for every test row; a tie goes to the emotion that comes first in the order
neutral, anger, joy, sadness (labels outside the study's four come after
them, alphabetically). ``predict_proba`` gives that label probability 1 and
every other training label 0: its classes are the training labels, as
scikit-learn's ``DummyClassifier`` has them, so a saved bundle names every
emotion it was trained on and its predictions carry a column for each.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from crossemo.methods._common import MostProbableMixin, check_fit_inputs, check_predict_inputs, ordered_labels


class Majority(MostProbableMixin, ClassifierMixin, BaseEstimator):
    """Predict the most frequent training label.

    Parameters:
        random_state: unused (the method is deterministic); kept for the common interface.

    Attributes:
        majority_: the predicted label.
        class_counts_: training rows per label, as a dict in label order.
        classes_: the training labels, in the tie-break order.
        n_features_in_: number of input features.
    """

    def __init__(self, *, random_state: int = 0):
        self.random_state = random_state

    def fit(self, X, y, *, is_target, speakers, X_unlabelled=None, speakers_unlabelled=None) -> Majority:
        X, y, is_target, speakers = check_fit_inputs(X, y, is_target, speakers)
        labels = ordered_labels(y)
        counts = {str(label): int(np.sum(y == label)) for label in labels}
        # ``max`` keeps the first of equal counts, and ``labels`` is in the tie-break order.
        self.majority_ = max(counts, key=counts.__getitem__)
        self.class_counts_ = counts
        self.classes_ = np.array(labels, dtype=str)
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X, *, speakers) -> np.ndarray:
        """Probability 1 for ``majority_`` and 0 for the other classes, on every test row: shape (n, len(classes_))."""
        check_is_fitted(self, "majority_")
        X, speakers = check_predict_inputs(X, speakers, self.n_features_in_)
        return np.tile((self.classes_ == self.majority_).astype(np.float64), (X.shape[0], 1))
