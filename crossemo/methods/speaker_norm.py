"""``speaker_norm``: per-speaker z-normalisation, then the study's Random Forest (beyond the study).

Not one of the study's methods: a common baseline of cross-corpus emotion
recognition that it did not try. Every speaker's features are standardised
with that speaker's own mean and standard deviation, so what remains is how
an utterance differs from the speaker's usual voice, which removes both the
speaker's and the corpus's (recording setup, language) offsets at once.

At training time this uses every training speaker's rows (source speakers
and the target's training speaker). At prediction time every test speaker is
normalised with the statistics of their own test rows: these are unlabelled,
so no test label is used, but the method is transductive (a speaker's
prediction depends on all of that speaker's test rows passed to the same
``predict`` call). A speaker with a single row, or a feature constant for a
speaker, gets a scale of 1 instead of 0, so a lone row becomes all zeros.
"""

from __future__ import annotations

import numpy as np

from crossemo.methods._common import mean_and_scale
from crossemo.methods._forest import ForestMethod


def speaker_zscore(X: np.ndarray, speakers: np.ndarray) -> np.ndarray:
    """``X`` with every speaker's rows standardised by that speaker's own mean and std."""
    X = np.asarray(X, dtype=np.float64)
    speakers = np.asarray(speakers).astype(str)
    out = np.empty_like(X)
    for speaker in np.unique(speakers):
        rows = speakers == speaker
        mean, scale = mean_and_scale(X[rows])
        out[rows] = (X[rows] - mean) / scale
    return out


class SpeakerNorm(ForestMethod):
    """Random Forest on features z-normalised per speaker (training and test speakers alike).

    Parameters: those of :class:`~crossemo.methods._forest.ForestMethod`
    (``n_estimators``, ``max_depth``, ``max_features``, ``random_state``).

    Attributes:
        forest_: the fitted ``RandomForestClassifier``.
        classes_: the labels seen in training, the study's emotions first in their order.
        n_features_in_: number of input features.
    """

    def _training_matrix(self, X, y, is_target, speakers):
        return speaker_zscore(X, speakers), y

    def _test_matrix(self, X, speakers):
        return speaker_zscore(X, speakers)
