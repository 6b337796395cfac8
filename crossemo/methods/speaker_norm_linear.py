"""``speaker_norm_linear``: per-speaker z-normalisation, then a weighted logistic regression (beyond the study).

The classic recipe of cross-corpus emotion recognition (Schuller et al.,
2010, "Cross-Corpus Acoustic Emotion Recognition: Variances and
Strategies", IEEE Trans. Affective Computing 1(2)): every speaker's features
are standardised by that speaker's own statistics, which removes the
speaker's and the corpus's offsets at once, and a regularised linear
classifier is trained on the pooled rows. Schuller et al. used a linear SVM;
the logistic regression used here is as linear and also gives calibrated
class probabilities. The target's training speaker gets as much weight in
total as the whole source (``target_share = 0.5``).

Transductive in the same way as ``speaker_norm``: a test speaker is
normalised by the statistics of their own (unlabelled) test rows. Without a
source (scenario 2) it is the target-only twin of the linear family.
Hyper-parameters are fixed (see :mod:`crossemo.methods._linear`).
"""

from __future__ import annotations

from crossemo.methods._linear import LinearMethod


class SpeakerNormLinear(LinearMethod):
    """Logistic regression on per-speaker z-normalised features, the target speaker weighted up.

    Parameters and attributes: those of :class:`~crossemo.methods._linear.LinearMethod`.
    """
