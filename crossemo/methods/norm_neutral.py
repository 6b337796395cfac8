"""``norm_neutral``: normalisation based on neutral speech (the study's section 3.4), then the Random Forest.

Every corpus is normalised on its own, x' = (x − μ) / σ per feature, where
μ is the mean of that corpus's *neutral* training utterances and σ is the
standard deviation of *all* its training utterances, so that each corpus's
neutral speech lands near the origin: a shared reference point. The
normalised source and target training rows are then pooled and the study's
Random Forest is fitted on them.

Reading of the study:

- "Training data" of the source is the whole source corpus (scenario 3); that
  of the target is the target's one training speaker. The target's test
  speakers are normalised with the training speaker's μ and σ: they have no
  labels, so their neutral utterances are unknown.
- σ is the population standard deviation (ddof 0). A feature that is
  constant in a corpus's training rows gets σ = 1, so it stays finite.
- A corpus without neutral training rows (possible with a small training
  speaker or an unusual corpus) falls back to the mean of all its training
  rows; ``neutral_fallback_`` records when that happened.
- The method needs the target's training rows (they define the test rows'
  normalisation); without source rows it is the target alone, normalised.
- A source that pools several corpora (a multi-source pair) is normalised
  corpus by corpus, each by its own neutral speech: the corpus is the part of
  a speaker id before its first ``/`` (see :mod:`crossemo.methods`).
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import check_is_fitted

from crossemo.methods._common import corpus_of, safe_scale
from crossemo.methods._forest import ForestMethod

NEUTRAL = "neutral"


def neutral_statistics(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """μ (mean of the neutral rows), σ (std of all rows) and whether μ fell back to all rows' mean."""
    neutral = y == NEUTRAL
    fell_back = not neutral.any()
    mean = X.mean(axis=0) if fell_back else X[neutral].mean(axis=0)
    return mean, safe_scale(X.std(axis=0), X.mean(axis=0)), fell_back


class NormNeutral(ForestMethod):
    """Random Forest on features normalised per corpus by its neutral speech.

    Parameters: those of :class:`~crossemo.methods._forest.ForestMethod`
    (``n_estimators``, ``max_depth``, ``max_features``, ``random_state``).

    Attributes:
        source_mean_, source_scale_: μ and σ of every source corpus, by corpus name (empty without source rows).
        target_mean_, target_scale_: μ and σ of the target's training speaker; they also normalise the test rows.
        neutral_fallback_: ``{"source": bool, "target": bool}``, True where a corpus had no
            neutral training rows and μ is the mean of all its rows.
        forest_, classes_, n_features_in_: as for ``rf``.
    """

    def _training_matrix(self, X, y, is_target, speakers):
        if not is_target.any():
            raise ValueError("norm_neutral needs the target speaker's training rows (is_target=True): they define the test rows' normalisation")
        self.target_mean_, self.target_scale_, target_fell_back = neutral_statistics(X[is_target], y[is_target])
        source_fell_back = False
        self.source_mean_, self.source_scale_ = {}, {}
        corpora = corpus_of(speakers)
        for corpus in map(str, dict.fromkeys(corpora[~is_target])):
            rows = ~is_target & (corpora == corpus)
            self.source_mean_[corpus], self.source_scale_[corpus], fell_back = neutral_statistics(X[rows], y[rows])
            source_fell_back |= fell_back
        self.neutral_fallback_ = {"source": source_fell_back, "target": target_fell_back}
        return self.transform(X, is_target=is_target, speakers=speakers), y

    def _test_matrix(self, X, speakers):
        return self.transform(X, is_target=np.ones(X.shape[0], dtype=bool), speakers=speakers)

    def transform(self, X, *, is_target, speakers) -> np.ndarray:
        """Normalise rows with their corpus's statistics: ``is_target`` says which rows are the target's, ``speakers`` which source corpus the others are from."""
        check_is_fitted(self, "target_mean_")
        X = np.asarray(X, dtype=np.float64)
        is_target = np.asarray(is_target, dtype=bool)
        corpora = corpus_of(speakers)
        out = np.empty_like(X)
        out[is_target] = (X[is_target] - self.target_mean_) / self.target_scale_
        for corpus in map(str, dict.fromkeys(corpora[~is_target])):
            if corpus not in self.source_mean_:
                raise ValueError(f"norm_neutral was fitted without source rows of corpus {corpus!r}, so it cannot normalise them")
            rows = ~is_target & (corpora == corpus)
            out[rows] = (X[rows] - self.source_mean_[corpus]) / self.source_scale_[corpus]
        return out
