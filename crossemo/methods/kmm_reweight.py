"""``kmm_reweight``: source utterances weighted by Kernel Mean Matching to the target (beyond the study).

Importance weighting for covariate shift: the emotion classifier should
learn most from the source utterances that resemble the target's. Kernel
Mean Matching (Huang, Smola, Gretton, Borgwardt & Schölkopf, 2007,
"Correcting Sample Selection Bias by Unlabeled Data", NIPS) finds bounded
source weights whose weighted mean in an RBF kernel's feature space equals
the target's mean, without estimating either density. skada's
``KMMReweightAdapter`` does it (its defaults: RBF kernel, weights in [0,
1000], Frank-Wolfe solver), on per-speaker z-normalised rows; the classifier
is that of :mod:`crossemo.methods._linear`.

The target side is every target row ``fit`` receives (the training
speaker's and the test speakers' unlabelled rows, never their labels). The
source weights are rescaled to keep the source's total weight, so
``target_share`` still holds. Nothing is tuned.

Why not skada's ``DiscriminatorReweightAdapter``: in skada 0.6.0 it weights
a source row by P(source | x) / P(target | x), the inverse of the importance
weight (on a 1-D shift its weights fall where the target lies; measured in
``tests/test_methods.py::test_kmm_weights_favour_target_like_source_rows``,
which checks that KMM's rise there).
"""

from __future__ import annotations

import numpy as np

from crossemo.methods._linear import LinearMethod, domain_labels, require_source


class KMMReweight(LinearMethod):
    """Source rows re-weighted by Kernel Mean Matching (skada), then the weighted logistic regression.

    Parameters and attributes: those of :class:`~crossemo.methods._linear.LinearMethod`, and
        source_weights_: the importance weight of every source row (mean 1).
    """

    min_source_speakers = 1  # it maps source rows onto the target (see crossemo.methods.speakers_needed)

    def _adapt(self, features, y, is_target, weights, unlabelled):
        from skada import KMMReweightAdapter

        require_source(is_target, "kmm_reweight")
        rows = np.vstack([features, unlabelled])
        _, routed = KMMReweightAdapter().fit_transform(rows, sample_domain=domain_labels(is_target, len(unlabelled)))
        source = ~is_target
        importance = np.asarray(routed["sample_weight"][: len(features)], dtype=np.float64)[source]
        total = importance.sum()
        self.source_weights_ = importance * source.sum() / total if total > 0 else np.ones(source.sum())
        weights = weights.copy()
        weights[source] = self.source_weights_
        return features, weights
