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

Every method is a scikit-learn estimator (``clone``, ``get_params`` and
``set_params`` work) whose constructor takes keyword parameters only,
``random_state`` among them:

- ``fit(X, y, *, is_target, speakers)`` takes the training rows: features
  ``X`` (n × d), emotion labels ``y``, ``is_target`` (True for rows of the
  target corpus's training speaker, False for source rows) and speaker ids;
  it returns the method. Fitted attributes end in ``_``; ``classes_`` holds
  the labels the method can predict.
- ``predict(X, *, speakers)`` takes the target's test rows and their speaker
  ids, never their labels, and returns an array of emotion labels.

Methods are deterministic given ``random_state`` and single-threaded
(forests use ``n_jobs=1``; torch runs on one thread inside ``fit`` and
``predict``), because the parallelism comes from running many fits at once.
"""

from __future__ import annotations

from typing import Any

from crossemo.methods.dbn import DBN
from crossemo.methods.fcnn import FineTunedFCNN, SourceFCNN
from crossemo.methods.majority import Majority
from crossemo.methods.multitask import MultiTask
from crossemo.methods.norm_distribution import NormDistribution
from crossemo.methods.norm_neutral import NormNeutral
from crossemo.methods.rf import RandomForest
from crossemo.methods.speaker_norm import SpeakerNorm

METHODS: dict[str, type] = {
    "majority": Majority,
    "rf": RandomForest,
    "dbn": DBN,
    "fcnn": FineTunedFCNN,
    "multitask": MultiTask,
    "norm_neutral": NormNeutral,
    "norm_distribution": NormDistribution,
    "speaker_norm": SpeakerNorm,
}
"""Method name → estimator class."""


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
        raise ValueError(f"method {name!r} has no parameter(s) {', '.join(unknown)}; it takes: {', '.join(sorted(known))}")
    return cls(random_state=random_state, **params)


__all__ = [
    "DBN", "METHODS", "FineTunedFCNN", "Majority", "MultiTask", "NormDistribution", "NormNeutral",
    "RandomForest", "SourceFCNN", "SpeakerNorm", "make_method",
]
