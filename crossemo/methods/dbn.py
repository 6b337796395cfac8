"""``dbn``: a Deep Belief Network after Latif et al. (2018) (the study's section 3.1).

Latif et al., "Transfer learning for improving speech emotion
classification accuracy" (Interspeech 2018), transfer knowledge across
corpora with a DBN: stacked restricted Boltzmann machines (RBMs) pre-trained
greedily without labels, then fine-tuned as a feed-forward classifier on
labelled source data mixed with a little target data. The study re-creates
that method "with the same network parameters". This implementation:

1. Z-normalises every speaker's rows by that speaker's own mean and std
   (``scaling="speaker"``, as ``speaker_norm``; test speakers by their own
   unlabelled rows at prediction), so the Gaussian visible units have unit
   variance and a speaker's or a corpus's offset is gone before pre-training.
   ``scaling="training"`` is the old reading: every feature standardised with
   the mean and std of all training rows (source and target).
2. Pre-trains a stack of RBMs greedily with one-step contrastive divergence
   (CD-1) on all training rows (their labels unused): the first RBM is
   Gaussian-Bernoulli (real-valued, unit-variance visible units, binary
   hidden units), the ones above are Bernoulli-Bernoulli, each trained on
   the hidden probabilities of the one below. In CD-1 the hidden states of
   the data are sampled; the reconstruction of the visible layer is its
   mean (Gaussian) or probability (Bernoulli), and the hidden units are
   driven by it with probabilities. Updates use momentum and L2 weight
   decay.
3. Unrolls the stack into a sigmoid network (each RBM's weights and hidden
   biases), adds a softmax output layer over the training emotions, and
   fine-tunes every layer with back-propagation (Adam, cross-entropy) on
   all the training rows, source and target together.

Assumptions: the values of Latif et al.'s network parameters were not at
hand when this was written, so the defaults below are chosen to train in a
few seconds on about 1500 × 1582 features on one CPU core, and every one is
a parameter:

- hidden layers (512, 256);
- pre-training: 10 epochs per RBM, mini-batches of 64, learning rate 0.005
  for the Gaussian-Bernoulli RBM and 0.05 for the Bernoulli ones, momentum
  0.5 for the first 5 epochs and 0.9 after, weight decay 2e-4, initial
  weights N(0, 0.01²), zero biases;
- fine-tuning: 10 epochs, mini-batches of 32, Adam with learning rate 1e-3,
  the output layer with PyTorch's default initialisation;
- a deeper, wider stack such as ``hidden_sizes=(1000, 1000, 1000)`` is one
  parameter away, at several times the cost;
- standardised inputs are clipped to ±5 standard deviations, so a few
  extreme feature values cannot destabilise the Gaussian RBM.

``reconstruction_errors_`` keeps, per RBM, the mean squared reconstruction
error of the training data before pre-training and after every epoch.

Evidence (issue 11). The scaling and the fine-tuning epochs were chosen by
``python benchmarks/readings.py --method dbn --seeds 0,1`` on source data
only, no cross-corpus pair formed: each shared corpus as a source in turn
(so the grid's shared pairs carry a small selection bias; README),
its speakers dealt into folds, the DBN fitted on the training speakers plus
one held-out speaker (as the target's training speaker) and scored by UAR on
the other held-out speakers. Stages in order, each keeping the best mean over
both corpora and seeds on a strict improvement, within 1.5x the old CPU:
per-speaker scaling (kept, +10.6 points), fine-tuning learning rate 1e-4
(lower, not kept), fine-tuning epochs 10 (kept, +1.0) or 30 (lower). The
reason per-speaker scaling wins is the one of ``speaker_norm``: it removes
the speaker and corpus offsets that the RBMs would otherwise model. Its cost
is the same too: prediction is transductive per test speaker (no labels).
Every other value is still an assumption, not validated.

Before/after, within-source validation UAR in % (± sd over seeds 0, 1) and
CPU seconds per validation fold:

=============================================  ===========  ===========  =====  ========
reading                                        EMOVO        RAVDESS      mean   CPU/fold
=============================================  ===========  ===========  =====  ========
before (training-row scaling, 20 epochs)       49.7 ± 0.8   62.7 ± 0.3   56.2   4.61 s
after (per-speaker scaling, 10 epochs)         60.3 ± 1.9   75.3 ± 1.4   67.8   2.98 s
=============================================  ===========  ===========  =====  ========
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from crossemo.methods._common import MostProbableMixin, check_fit_inputs, check_predict_inputs, mean_and_scale, normalised_rows, ordered_labels
from crossemo.methods._torch import as_tensor, check_positive_int, check_sizes, generator, linear, single_thread, train_classifier
from crossemo.methods.speaker_norm import speaker_zscore

SCALINGS = ("training", "speaker")
"""How inputs are standardised: with the statistics of all training rows, or every speaker by their own."""

_PRETRAINING, _FINE_TUNING = 1, 2
"""Purpose constants for the seeded generators."""


class RBM:
    """A restricted Boltzmann machine trained with CD-1: Gaussian (unit variance) or Bernoulli visible units, Bernoulli hidden units."""

    def __init__(self, n_visible: int, n_hidden: int, *, gaussian: bool, gen: torch.Generator):
        self.gaussian = gaussian
        self.weight = torch.randn(n_visible, n_hidden, generator=gen) * 0.01
        self.visible_bias = torch.zeros(n_visible)
        self.hidden_bias = torch.zeros(n_hidden)

    def hidden_probabilities(self, visible: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(visible @ self.weight + self.hidden_bias)

    def reconstruct(self, hidden: torch.Tensor) -> torch.Tensor:
        """The visible layer's mean (Gaussian) or probability (Bernoulli) given the hidden states."""
        activation = hidden @ self.weight.T + self.visible_bias
        return activation if self.gaussian else torch.sigmoid(activation)

    def reconstruction_error(self, visible: torch.Tensor) -> float:
        """Mean squared difference between the data and its mean-field one-step reconstruction."""
        return float(((visible - self.reconstruct(self.hidden_probabilities(visible))) ** 2).mean())

    def train(self, data: torch.Tensor, *, epochs: int, batch_size: int, learning_rate: float, momentum: tuple[float, float], momentum_switch: int, weight_decay: float, gen: torch.Generator) -> list[float]:
        """CD-1 on ``data``; returns the reconstruction error before training and after every epoch."""
        velocities = [torch.zeros_like(self.weight), torch.zeros_like(self.visible_bias), torch.zeros_like(self.hidden_bias)]
        errors = [self.reconstruction_error(data)]
        n = data.shape[0]
        for epoch in range(epochs):
            mom = momentum[0] if epoch < momentum_switch else momentum[1]
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, batch_size):
                v0 = data[order[start:start + batch_size]]
                h0 = self.hidden_probabilities(v0)
                v1 = self.reconstruct(torch.bernoulli(h0, generator=gen))
                h1 = self.hidden_probabilities(v1)
                size = v0.shape[0]
                gradients = [
                    (v0.T @ h0 - v1.T @ h1) / size - weight_decay * self.weight,
                    (v0 - v1).mean(dim=0),
                    (h0 - h1).mean(dim=0),
                ]
                for velocity, gradient, parameter in zip(velocities, gradients, (self.weight, self.visible_bias, self.hidden_bias)):
                    velocity.mul_(mom).add_(gradient, alpha=learning_rate)
                    parameter.add_(velocity)
            errors.append(self.reconstruction_error(data))
        return errors


class DBN(MostProbableMixin, ClassifierMixin, BaseEstimator):
    """Deep Belief Network: greedy CD-1 pre-training of stacked RBMs, then supervised fine-tuning.

    Parameters:
        hidden_sizes: units per RBM / hidden layer, bottom first.
        pretrain_epochs: CD-1 epochs per RBM.
        pretrain_batch_size: rows per CD-1 mini-batch.
        gaussian_learning_rate: CD-1 learning rate of the first (Gaussian-Bernoulli) RBM.
        bernoulli_learning_rate: CD-1 learning rate of the Bernoulli-Bernoulli RBMs.
        initial_momentum, final_momentum: CD-1 momentum before and after ``momentum_switch`` epochs.
        momentum_switch: epoch at which the momentum changes.
        weight_decay: L2 penalty on the RBM weights.
        finetune_epochs: back-propagation epochs.
        finetune_batch_size: rows per fine-tuning mini-batch.
        finetune_learning_rate: Adam's learning rate.
        clip: standardised inputs are clipped to [−clip, clip] (``None``: no clipping).
        scaling: ``"training"`` standardises every input with the mean and std of all
            training rows; ``"speaker"`` z-normalises every speaker's rows by that speaker's
            own mean and std (as ``speaker_norm``), in training and at prediction.
        random_state: seed of the RBM initialisation, the CD sampling and the batch orders.

    Attributes:
        network_: the fine-tuned ``torch.nn.Sequential`` (sigmoid layers, then the output).
        mean_, scale_: per-feature statistics of the training rows that standardise every input
            with ``scaling="training"`` (computed but unused with ``"speaker"``).
        reconstruction_errors_: per RBM, the reconstruction error before pre-training and after each epoch.
        finetune_loss_curve_: mean fine-tuning loss per epoch.
        classes_: the training emotions, the output units' order.
        n_features_in_: number of input features.
    """

    def __init__(self, *, hidden_sizes: tuple[int, ...] = (512, 256), pretrain_epochs: int = 10, pretrain_batch_size: int = 64, gaussian_learning_rate: float = 0.005, bernoulli_learning_rate: float = 0.05, initial_momentum: float = 0.5, final_momentum: float = 0.9, momentum_switch: int = 5, weight_decay: float = 2e-4, finetune_epochs: int = 10, finetune_batch_size: int = 32, finetune_learning_rate: float = 1e-3, clip: float | None = 5.0, scaling: str = "speaker", random_state: int = 0):
        self.hidden_sizes = hidden_sizes
        self.pretrain_epochs = pretrain_epochs
        self.pretrain_batch_size = pretrain_batch_size
        self.gaussian_learning_rate = gaussian_learning_rate
        self.bernoulli_learning_rate = bernoulli_learning_rate
        self.initial_momentum = initial_momentum
        self.final_momentum = final_momentum
        self.momentum_switch = momentum_switch
        self.weight_decay = weight_decay
        self.finetune_epochs = finetune_epochs
        self.finetune_batch_size = finetune_batch_size
        self.finetune_learning_rate = finetune_learning_rate
        self.clip = clip
        self.scaling = scaling
        self.random_state = random_state

    def fit(self, X, y, *, is_target, speakers, X_unlabelled=None, speakers_unlabelled=None) -> DBN:
        """Pre-train the RBMs on all training rows, then fine-tune the network on their labels."""
        X, y, is_target, speakers = check_fit_inputs(X, y, is_target, speakers)
        hidden_sizes = check_sizes(self.hidden_sizes, "hidden_sizes")
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {', '.join(map(repr, SCALINGS))}; got {self.scaling!r}")
        pretrain_epochs = int(self.pretrain_epochs)
        if pretrain_epochs < 0:
            raise ValueError(f"pretrain_epochs must be >= 0; got {self.pretrain_epochs!r}")
        self.mean_, self.scale_ = mean_and_scale(X)
        self.n_features_in_ = X.shape[1]
        self.classes_ = ordered_labels(y)
        position = {label: i for i, label in enumerate(self.classes_)}
        targets = torch.tensor([position[label] for label in y], dtype=torch.long)
        with single_thread():
            data = self._standardise(X, speakers)
            pretraining = generator(self.random_state, _PRETRAINING)
            rbms, self.reconstruction_errors_ = [], []
            layer_input, width = data, X.shape[1]
            for depth, size in enumerate(hidden_sizes):
                rbm = RBM(width, size, gaussian=depth == 0, gen=pretraining)
                self.reconstruction_errors_.append(rbm.train(
                    layer_input, epochs=pretrain_epochs,
                    batch_size=check_positive_int(self.pretrain_batch_size, "pretrain_batch_size"),
                    learning_rate=self.gaussian_learning_rate if depth == 0 else self.bernoulli_learning_rate,
                    momentum=(self.initial_momentum, self.final_momentum), momentum_switch=self.momentum_switch,
                    weight_decay=self.weight_decay, gen=pretraining,
                ))
                rbms.append(rbm)
                layer_input, width = rbm.hidden_probabilities(layer_input), size
            fine_tuning = generator(self.random_state, _FINE_TUNING)
            self.network_ = self._unroll(rbms, len(self.classes_), fine_tuning)
            self.finetune_loss_curve_ = train_classifier(
                self.network_, data, targets,
                epochs=check_positive_int(self.finetune_epochs, "finetune_epochs"),
                batch_size=check_positive_int(self.finetune_batch_size, "finetune_batch_size"),
                learning_rate=self.finetune_learning_rate, weight_decay=0.0, gen=fine_tuning,
            )
        return self

    @staticmethod
    def _unroll(rbms: list[RBM], n_classes: int, gen: torch.Generator) -> torch.nn.Sequential:
        layers: list[torch.nn.Module] = []
        for rbm in rbms:
            layer = linear(rbm.weight.shape[0], rbm.weight.shape[1], gen)
            with torch.no_grad():
                layer.weight.copy_(rbm.weight.T)
                layer.bias.copy_(rbm.hidden_bias)
            layers += [layer, torch.nn.Sigmoid()]
        layers.append(linear(rbms[-1].weight.shape[1], n_classes, gen))
        return torch.nn.Sequential(*layers)

    def _standardise(self, X: np.ndarray, speakers: np.ndarray) -> torch.Tensor:
        if self.scaling == "speaker":
            standardised = speaker_zscore(X, speakers)
        else:
            standardised = (X - self.mean_) / self.scale_
        if self.clip is not None:
            standardised = np.clip(standardised, -self.clip, self.clip)
        return as_tensor(standardised)

    def predict_proba(self, X, *, speakers) -> np.ndarray:
        """Softmax output, columns in the order of ``classes_``."""
        check_is_fitted(self, "network_")
        X, speakers = check_predict_inputs(X, speakers, self.n_features_in_)
        with single_thread(), torch.no_grad():
            return normalised_rows(torch.softmax(self.network_(self._standardise(X, speakers)), dim=1).numpy())
