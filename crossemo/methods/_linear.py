"""The linear family: per-speaker z-normalisation, an optional adaptation step, a weighted logistic regression.

``speaker_norm_linear`` is this pipeline with no adaptation step; ``coral``,
``subspace_alignment`` and ``kmm_reweight`` insert one of skada's
adapters between the normalisation and the classifier, and ``self_training``
refits it on pseudo-labelled test utterances. Sharing one base keeps the
comparison between them about the adaptation alone.

The pipeline, in the order it runs:

1. every speaker's rows are z-normalised by that speaker's own mean and
   standard deviation (:func:`~crossemo.methods.speaker_norm.speaker_zscore`),
   training and test speakers alike (Schuller et al., 2010);
2. :meth:`LinearMethod._adapt` may map the rows or weight them, given the
   source rows, the target's labelled rows and its unlabelled rows;
3. an L2-regularised logistic regression is fitted with sample weights that
   give the target's training speaker as much weight in total as the whole
   source (``target_share = 0.5``), so a few target utterances are not drowned.

Hyper-parameters are fixed defaults, chosen without any target test label:
``C = 0.01`` is the strong regularisation that suits many more features
(1582) than utterances per speaker (tens), the usual choice for openSMILE
functionals with a linear model; ``benchmarks/recommend.py`` checks the
family against the others on source data only (see the README).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

from crossemo.methods._common import (
    MostProbableMixin, check_fit_inputs, check_predict_inputs, check_unlabelled, class_columns, normalised_rows, ordered_labels, target_weights,
)
from crossemo.methods.speaker_norm import speaker_zscore


class LinearMethod(MostProbableMixin, ClassifierMixin, BaseEstimator):
    """Per-speaker z-normalisation, an adaptation hook, then a weighted logistic regression.

    Parameters:
        C: inverse L2 regularisation strength of the logistic regression.
        target_share: share of the total sample weight given to the target's
            training rows (0.5: as much as the whole source).
        max_iter: iterations of the lbfgs solver.
        random_state: seed (the solver is deterministic; adapters may use it).

    Attributes:
        model_: the fitted ``LogisticRegression`` (a ``DummyClassifier`` when the training rows hold one emotion).
        classes_: the labels seen in training, the study's emotions first in their order.
        n_features_in_: number of input features.
    """

    def __init__(self, *, C: float = 0.01, target_share: float = 0.5, max_iter: int = 1000, random_state: int = 0):
        self.C = C
        self.target_share = target_share
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X, y, *, is_target, speakers, X_unlabelled=None, speakers_unlabelled=None) -> LinearMethod:
        """Normalise every speaker, adapt, fit the weighted classifier."""
        features, y, weights, _ = self._prepare(X, y, is_target, speakers, X_unlabelled, speakers_unlabelled)
        self.model_ = self._fit_classifier(features, y, weights)
        return self

    def _prepare(self, X, y, is_target, speakers, X_unlabelled, speakers_unlabelled) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Checked, per-speaker normalised and adapted training rows with their labels and weights, and the normalised unlabelled rows."""
        X, y, is_target, speakers = check_fit_inputs(X, y, is_target, speakers)
        unlabelled, unlabelled_speakers = check_unlabelled(X_unlabelled, speakers_unlabelled, X.shape[1])
        self.n_features_in_ = X.shape[1]
        self.classes_ = ordered_labels(y)
        features = speaker_zscore(X, speakers)
        unlabelled = speaker_zscore(unlabelled, unlabelled_speakers) if len(unlabelled) else unlabelled
        weights = target_weights(is_target, target_share=self.target_share)
        features, weights = self._adapt(features, y, is_target, weights, unlabelled)
        return features, y, weights, unlabelled

    def _adapt(self, features: np.ndarray, y: np.ndarray, is_target: np.ndarray, weights: np.ndarray, unlabelled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The training rows and their weights as the classifier sees them; by default unchanged."""
        return features, weights

    def _test_matrix(self, features: np.ndarray) -> np.ndarray:
        """The (z-normalised) test rows as the classifier sees them; by default unchanged."""
        return features

    def _fit_classifier(
        self, features: np.ndarray, y: np.ndarray, weights: np.ndarray, *, start: LogisticRegression | DummyClassifier | None = None,
    ) -> LogisticRegression | DummyClassifier:
        """The weighted logistic regression; ``start``: a fitted model to continue from (same classes), which saves iterations.

        Rows of one emotion only (a target speaker who recorded nothing
        else, trained on alone) give a model that always predicts it, as the
        forests do: a logistic regression needs two classes to separate.
        """
        if isinstance(self.C, (bool, str)) or not isinstance(self.C, (int, float, np.integer, np.floating)) or not self.C > 0:
            raise ValueError(f"C must be a positive number; got {self.C!r}")
        if np.unique(y).size < 2:
            return DummyClassifier(strategy="prior").fit(features, y, sample_weight=weights)
        model = start.set_params(warm_start=True) if isinstance(start, LogisticRegression) else LogisticRegression(C=self.C, max_iter=int(self.max_iter))
        # float32 halves the solver's time on 1582 features; z-scores need no more precision.
        return model.fit(features.astype(np.float32), y, sample_weight=weights)

    def _probabilities(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities of already normalised and adapted rows, columns in ``classes_`` order."""
        columns = class_columns(self.classes_, self.model_.classes_)
        return normalised_rows(self.model_.predict_proba(features.astype(np.float32))[:, columns])

    def predict_proba(self, X, *, speakers) -> np.ndarray:
        """Class probabilities (n × len(classes_)), every test speaker normalised by their own rows."""
        check_is_fitted(self, "model_")
        X, speakers = check_predict_inputs(X, speakers, self.n_features_in_)
        return self._probabilities(self._test_matrix(speaker_zscore(X, speakers)))


def domain_labels(is_target: np.ndarray, n_unlabelled: int) -> np.ndarray:
    """skada's ``sample_domain`` for [training rows; unlabelled rows]: 1 for the source, −1 for the target corpus."""
    return np.concatenate([np.where(is_target, -1, 1), np.full(n_unlabelled, -1)])


def require_source(is_target: np.ndarray, method: str) -> None:
    """Adapters map a source onto the target: without source rows there is nothing to adapt."""
    if is_target.all():
        raise ValueError(f"{method} adapts source rows to the target and needs source rows (is_target=False)")
