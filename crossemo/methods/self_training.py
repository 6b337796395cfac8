"""``self_training``: ``speaker_norm_linear``, refitted on the test speakers' confidently pseudo-labelled utterances (beyond the study).

Self-training (Yarowsky, 1995; for speech emotion across corpora, Zhang,
Weninger, Wöllmer & Schuller, 2011, "Unsupervised learning in cross-corpus
acoustic emotion recognition", ASRU): fit the base method, label the
unlabelled target utterances it is most sure about with its own
predictions, add them to the training rows, refit; repeat for ``rounds``
rounds. It is transductive: it uses the test speakers' audio, never their
labels (they never reach ``fit``).

The base is :class:`~crossemo.methods.speaker_norm_linear.SpeakerNormLinear`.
An unlabelled utterance is pseudo-labelled in a round when its top class
probability is at least ``threshold``; each round starts again from the
labelled rows, so a wrong pseudo-label of an early round is not kept by
force (the solver starts from the previous round's weights, which only saves
iterations). Pseudo-labelled rows weigh 1 each, as a source row does, and
are not capped: the target's labelled speaker weighs as much as the whole
source (``target_share``), but with many test speakers their pseudo-labels
can outweigh all the labelled rows together. That is self-training as the
literature runs it; the ``threshold`` is what keeps those labels
trustworthy. scikit-learn's
``SelfTrainingClassifier`` has the same loop, but cannot carry the
per-row weights of the base method, so the loop is written out here.

Defaults are fixed, not tuned: ``threshold = 0.75`` is scikit-learn's
``SelfTrainingClassifier`` default; ``rounds = 2`` bounds the cost at three
fits of the base model.
"""

from __future__ import annotations

import numpy as np

from crossemo.methods._linear import LinearMethod


class SelfTraining(LinearMethod):
    """Per-speaker z-normalised logistic regression, self-trained on confident test utterances.

    Parameters: those of :class:`~crossemo.methods._linear.LinearMethod`, and
        rounds: pseudo-labelling rounds (0: the base method alone).
        threshold: least top-class probability for an utterance to be pseudo-labelled, in (0, 1].

    Attributes: those of :class:`~crossemo.methods._linear.LinearMethod`, and
        pseudo_labelled_: unlabelled rows pseudo-labelled in each round.
    """

    def __init__(self, *, rounds: int = 2, threshold: float = 0.75, C: float = 0.01, target_share: float = 0.5, max_iter: int = 1000, random_state: int = 0):
        super().__init__(C=C, target_share=target_share, max_iter=max_iter, random_state=random_state)
        self.rounds = rounds
        self.threshold = threshold

    def fit(self, X, y, *, is_target, speakers, X_unlabelled=None, speakers_unlabelled=None) -> SelfTraining:
        """Fit the base method, then refit ``rounds`` times with the confident pseudo-labels added."""
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, (int, np.integer)) or self.rounds < 0:
            raise ValueError(f"rounds must be a non-negative int; got {self.rounds!r}")
        if not 0.0 < float(self.threshold) <= 1.0:
            raise ValueError(f"threshold must be in (0, 1]; got {self.threshold!r}")
        features, y, weights, unlabelled = self._prepare(X, y, is_target, speakers, X_unlabelled, speakers_unlabelled)
        self.model_ = self._fit_classifier(features, y, weights)
        self.pseudo_labelled_ = []
        if not len(unlabelled):
            return self
        for _ in range(int(self.rounds)):
            probabilities = self._probabilities(unlabelled)
            confident = probabilities.max(axis=1) >= float(self.threshold)
            self.pseudo_labelled_.append(int(confident.sum()))
            if not confident.any():
                break
            pseudo = self.classes_[probabilities[confident].argmax(axis=1)]
            self.model_ = self._fit_classifier(
                np.vstack([features, unlabelled[confident]]), np.concatenate([y, pseudo]), np.concatenate([weights, np.ones(confident.sum())]),
                start=self.model_,
            )
        return self
