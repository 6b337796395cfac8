"""The study's classifiers and transfer-learning methods, behind one scikit-learn-style interface.

Baselines (Table 2 of the study):

- ``majority``: the most frequent training class (:mod:`.majority`).
- ``rf``: Random Forest, 1000 trees, depth 10, on the pooled training rows (:mod:`.rf`).

Transfer methods (Table 3, run in scenario 3):

- ``dbn``: Deep Belief Network after Latif et al. 2018 (:mod:`.dbn`).
- ``fcnn``: FCNN 1000-500-300 trained on the source, output layer fine-tuned on the target (:mod:`.fcnn`).
- ``multitask``: Random Forest with separate source and target classes per emotion (:mod:`.multitask`).
- ``norm_neutral``: per-corpus normalisation by neutral speech, then the forest (:mod:`.norm_neutral`).
- ``norm_distribution``: per-emotion matching of binned feature distributions, then the forest (:mod:`.norm_distribution`).
- ``speaker_norm``: per-speaker z-normalisation, then the forest; beyond the study (:mod:`.speaker_norm`).

Beyond the study, the linear family (per-speaker z-normalisation, then a
weighted logistic regression; :mod:`._linear`) and domain adaptation from
skada:

- ``speaker_norm_linear``: the family with no adaptation, Schuller et al. 2010 (:mod:`.speaker_norm_linear`).
- ``coral``: CORAL, the source re-coloured to the target's covariance (:mod:`.coral`).
- ``subspace_alignment``: source and target on aligned principal subspaces (:mod:`.subspace_alignment`).
- ``kmm_reweight``: source rows weighted by Kernel Mean Matching to the target (:mod:`.kmm_reweight`).
- ``self_training``: ``speaker_norm_linear`` refitted on confidently pseudo-labelled test utterances (:mod:`.self_training`).
- ``dann``: a domain-adversarial network (:mod:`.dann`).

:data:`RECOMMENDED` is the one transfer method crossemo advises; the README
gives the evidence it was chosen on.

Every method is a scikit-learn estimator (``clone``, ``get_params`` and
``set_params`` work) whose constructor takes keyword parameters only,
``random_state`` among them:

- ``fit(X, y, *, is_target, speakers, X_unlabelled=None, speakers_unlabelled=None)``
  takes the training rows: features ``X`` (n × d), emotion labels ``y``,
  ``is_target`` (True for rows of the target corpus's training speaker,
  False for source rows) and speaker ids, which start with their corpus's
  name and a ``/`` (``emovo/f1``), so a method can tell the corpora of a
  multi-source pair apart. It may also take *unlabelled* rows: the test
  speakers' features (m × d) and speaker ids, because adapting to a domain
  needs that domain's audio. Their labels never reach ``fit`` (the protocol
  passes none, and ``tests/test_methods.py`` checks that permuting the test
  labels changes no method's predictions). Methods that do not adapt (those
  not in :data:`ADAPTING`) ignore them. ``fit`` returns the method. Fitted attributes end in ``_``;
  ``classes_`` holds the labels the method can predict.
- ``predict(X, *, speakers)`` takes the target's test rows and their speaker
  ids, never their labels, and returns an array of emotion labels.
- ``predict_proba(X, *, speakers)`` takes the same arguments and returns the
  class probabilities, a float64 array of shape (n, ``len(classes_)``) whose
  columns follow ``classes_`` and whose rows sum to 1. ``predict`` returns
  the class of the highest probability, ties going to the first in
  ``classes_``, except in the forest family (``rf``, ``speaker_norm``,
  ``norm_neutral``, ``norm_distribution``): there a tie goes to the class
  whose name sorts first, scikit-learn's rule, which the study's results
  were made with. ``multitask``'s probabilities are those of its target
  classes, renormalised (see :mod:`.multitask`); ``majority`` gives its
  class probability 1 and the other training labels 0.

Methods are deterministic given ``random_state`` and single-threaded
(forests use ``n_jobs=1``; torch runs on one thread inside ``fit`` and
``predict``), because the parallelism comes from running many fits at once.
"""

from __future__ import annotations

from typing import Any

from crossemo.methods.coral import Coral
from crossemo.methods.dann import DANN
from crossemo.methods.dbn import DBN
from crossemo.methods.fcnn import FineTunedFCNN, SourceFCNN
from crossemo.methods.majority import Majority
from crossemo.methods.multitask import MultiTask
from crossemo.methods.norm_distribution import NormDistribution
from crossemo.methods.norm_neutral import NormNeutral
from crossemo.methods.rf import RandomForest
from crossemo.methods.kmm_reweight import KMMReweight
from crossemo.methods.self_training import SelfTraining
from crossemo.methods.speaker_norm import SpeakerNorm
from crossemo.methods.speaker_norm_linear import SpeakerNormLinear
from crossemo.methods.subspace_alignment import SubspaceAlignment

METHODS: dict[str, type] = {
    "majority": Majority,
    "rf": RandomForest,
    "dbn": DBN,
    "fcnn": FineTunedFCNN,
    "multitask": MultiTask,
    "norm_neutral": NormNeutral,
    "norm_distribution": NormDistribution,
    "speaker_norm": SpeakerNorm,
    "speaker_norm_linear": SpeakerNormLinear,
    "coral": Coral,
    "subspace_alignment": SubspaceAlignment,
    "kmm_reweight": KMMReweight,
    "self_training": SelfTraining,
    "dann": DANN,
}
"""Method name → estimator class."""

ADAPTING = frozenset({"coral", "subspace_alignment", "kmm_reweight", "self_training", "dann"})
"""Methods whose fit uses the unlabelled rows it is given (the target domain's audio); the others ignore them
(``tests/test_methods.py`` checks both), so ``crossemo train --adapt-to`` is refused for them."""

RECOMMENDED = "self_training"
"""The transfer method crossemo advises; fixed here, never picked per run (the README says why)."""


def speakers_needed(method: Any) -> tuple[int, int]:
    """The fewest labelled speakers an unfitted method needs to fit: ``(source, target)``.

    Every method needs one labelled target speaker (scenario 3 trains on
    one) and, by default, no source; a method whose parameters ask for more
    says so in ``min_source_speakers`` or ``min_target_speakers``: the
    adapters (``coral``, ``subspace_alignment``, ``kmm_reweight``) map source
    rows, so need one, as does ``fcnn``, which fine-tunes a source network,
    and which needs two with ``early_stopping`` (it holds one out). The
    commands compare these with the manifests' speakers before any Ray work,
    and ``train`` refuses a method needing a source without one.

    Args:
        method: an unfitted method (:func:`make_method`).

    Returns:
        ``(source speakers, target speakers)``.
    """
    return int(getattr(method, "min_source_speakers", 0)), int(getattr(method, "min_target_speakers", 1))


def make_method(name: str, *, random_state: int = 0, **params: Any):
    """A new, unfitted method by name.

    Args:
        name: a key of :data:`METHODS`.
        random_state: the method's seed.
        **params: other constructor parameters of that method.

    Raises:
        ValueError: an unknown method, or a parameter the method does not have.
    """
    try:
        cls = METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}") from None
    known = cls().get_params(deep=False)
    unknown = sorted(set(params) - set(known))
    if unknown:
        settable = sorted(set(known) - {"random_state"})  # the run's seed, never set per method
        raise ValueError(f"method {name!r} has no parameter(s) {', '.join(unknown)}; it takes: {', '.join(settable)}")
    return cls(random_state=random_state, **params)


__all__ = [
    "DANN", "DBN", "METHODS", "RECOMMENDED", "Coral", "FineTunedFCNN", "KMMReweight", "Majority", "MultiTask", "NormDistribution",
    "NormNeutral", "RandomForest", "SelfTraining", "SourceFCNN", "SpeakerNorm", "SpeakerNormLinear", "SubspaceAlignment", "make_method", "speakers_needed",
]
