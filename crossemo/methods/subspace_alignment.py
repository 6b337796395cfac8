"""``subspace_alignment``: source and target projected on aligned principal subspaces (beyond the study).

Subspace Alignment (Fernando, Habrard, Sebban & Tuytelaars, 2013,
"Unsupervised Visual Domain Adaptation Using Subspace Alignment", ICCV):
each domain is projected on its own first ``n_components`` principal axes,
and the source's axes are rotated onto the target's by the linear map that
aligns the two bases. skada's ``SubspaceAlignmentAdapter`` does it, on
per-speaker z-normalised rows; the classifier is that of
:mod:`crossemo.methods._linear`.

The target's subspace comes from every target row ``fit`` receives (the
training speaker's and the test speakers' unlabelled rows). ``n_components``
is 64 by default: it must stay below the number of target rows (a
few hundred) and keeps the classifier's input small (with fewer rows in a
domain, or fewer features, the default takes that many). It is fixed, not
tuned on any target label.
"""

from __future__ import annotations

import numpy as np

from crossemo.methods._linear import LinearMethod, domain_labels, require_source

DEFAULT_COMPONENTS = 64
"""Subspace dimension unless a domain has fewer rows or the data fewer features."""


class SubspaceAlignment(LinearMethod):
    """Subspace Alignment (skada) of per-speaker z-normalised rows, then the weighted logistic regression.

    Parameters: those of :class:`~crossemo.methods._linear.LinearMethod`, and
        n_components: dimension of the aligned subspaces (a positive int), capped
            at the rows of either domain and the features; ``None``: 64, capped the same way.

    Attributes: those of :class:`~crossemo.methods._linear.LinearMethod`, and
        adapter_: the fitted ``skada.SubspaceAlignmentAdapter``.
    """

    min_source_speakers = 1  # it maps source rows onto the target (see crossemo.methods.speakers_needed)

    def __init__(self, *, n_components: int | None = None, C: float = 0.01, target_share: float = 0.5, max_iter: int = 1000, random_state: int = 0):
        super().__init__(C=C, target_share=target_share, max_iter=max_iter, random_state=random_state)
        self.n_components = n_components

    def _adapt(self, features, y, is_target, weights, unlabelled):
        from skada import SubspaceAlignmentAdapter

        require_source(is_target, "subspace_alignment")
        domains = domain_labels(is_target, len(unlabelled))
        rows = np.vstack([features, unlabelled])
        fewest = min(int((domains > 0).sum()), int((domains < 0).sum()), rows.shape[1])
        wanted = DEFAULT_COMPONENTS if self.n_components is None else self.n_components
        if isinstance(wanted, bool) or not isinstance(wanted, (int, np.integer)) or wanted < 1:
            raise ValueError(f"n_components must be a positive int or None; got {self.n_components!r}")
        # A subspace cannot have more axes than the smaller domain has rows, or the data features.
        components = min(int(wanted), fewest)
        self.adapter_ = SubspaceAlignmentAdapter(n_components=int(components), random_state=self.random_state).fit(rows, sample_domain=domains)
        mapped = self.adapter_.transform(rows, sample_domain=domains, allow_source=True)
        return mapped[: len(features)], weights

    def _test_matrix(self, features):
        return self.adapter_.transform(features, sample_domain=-np.ones(len(features), int))
