"""``coral``: CORrelation ALignment of the source to the target, then the linear family's classifier (beyond the study).

CORAL (Sun, Feng & Saenko, 2016, "Return of Frustratingly Easy Domain
Adaptation", AAAI) whitens the source features with their own covariance and
re-colours them with the target's, so a classifier trained on the source sees
the target's second-order statistics. skada's ``CORALAdapter`` does it; the
rows are per-speaker z-normalised first and the classifier is that of
:mod:`crossemo.methods._linear`, so this differs from ``speaker_norm_linear``
by the alignment alone.

The target's covariance is estimated from every target row ``fit`` receives:
the training speaker's and the test speakers' unlabelled rows (never their
labels). Each domain is centred on its own mean; the target's rows are
otherwise unchanged. A 1582-dimensional covariance from a few hundred rows is
singular, so both are shrunk towards a scaled identity: the paper adds the
identity; skada's ``reg`` is a shrinkage coefficient, and ``reg = "auto"``
takes the Ledoit-Wolf estimate of it from the rows themselves (no labels),
so nothing is tuned.
"""

from __future__ import annotations

import numpy as np

from crossemo.methods._linear import LinearMethod, domain_labels, require_source


class Coral(LinearMethod):
    """CORAL (skada) between per-speaker z-normalised source and target rows, then the weighted logistic regression.

    Parameters: those of :class:`~crossemo.methods._linear.LinearMethod`, and
        reg: shrinkage of both covariances towards a scaled identity, in [0, 1],
            or ``"auto"`` (Ledoit-Wolf, estimated from the rows).

    Attributes: those of :class:`~crossemo.methods._linear.LinearMethod`, and
        adapter_: the fitted ``skada.CORALAdapter``.
    """

    min_source_speakers = 1  # it maps source rows onto the target (see crossemo.methods.speakers_needed)

    def __init__(self, *, reg: float | str = "auto", C: float = 0.01, target_share: float = 0.5, max_iter: int = 1000, random_state: int = 0):
        super().__init__(C=C, target_share=target_share, max_iter=max_iter, random_state=random_state)
        self.reg = reg

    def _adapt(self, features, y, is_target, weights, unlabelled):
        from skada import CORALAdapter

        require_source(is_target, "coral")
        numeric = not isinstance(self.reg, (bool, str)) and isinstance(self.reg, (int, float, np.integer, np.floating))
        if self.reg != "auto" and not (numeric and 0.0 <= float(self.reg) <= 1.0):
            raise ValueError(f'reg must be a shrinkage in [0, 1] or "auto"; got {self.reg!r}')
        rows = np.vstack([features, unlabelled])
        self.adapter_ = CORALAdapter(reg=self.reg)
        adapted = self.adapter_.fit_transform(rows, sample_domain=domain_labels(is_target, len(unlabelled)))[: len(features)]
        if not np.isfinite(adapted).all():
            raise ValueError("coral: the covariance alignment gave non-finite features (a covariance too close to singular); raise reg")
        return adapted, weights

    def _test_matrix(self, features):
        return self.adapter_.transform(features, sample_domain=-np.ones(len(features), int))
