"""``dann``: a domain-adversarial network between the labelled rows and the test speakers' audio (beyond the study).

DANN (Ganin, Ustinova, Ajakan, Germain, Larochelle, Laviolette, Marchand &
Lempitsky, 2016, "Domain-Adversarial Training of Neural Networks", JMLR 17):
a feature extractor feeds both an emotion classifier and, through a gradient
reversal layer, a domain classifier; training makes the features good for
the emotions and useless for telling the domains apart. skada's
``skada.deep.DANN`` (on torch, through skorch) does it.

The reading here:

- input: per-speaker z-normalised features (as ``speaker_norm``), so the
  network starts from what the other families start from;
- domains: the *labelled* rows (the source and the target's training
  speaker) against the *unlabelled* rows (the test speakers' audio, never
  their labels), so the features are made indistinguishable exactly between
  what the model learns from and what it must label. skada's loss uses
  labels only of the labelled domain. With no unlabelled rows there is no
  adversary, and the network is trained on the labelled rows alone;
- the target speaker's rows are repeated to about the source's size
  (skada's loss takes no sample weights), the counterpart of the linear
  family's ``target_share = 0.5``;
- network: dropout 0.2 on the input, one hidden layer of 256 ReLU units (the
  features the adversary sees), a linear output; Adam, learning rate 1e-3,
  batches of 64 (or of the larger domain's rows when it has fewer: skada
  counts an epoch in whole batches, so with both domains under one batch it
  would train no step), 10 epochs (the cost of a linear-family fit; skorch's
  default of 10 too), adversarial weight ``reg = 1`` (skada's default). All
  fixed, none tuned on any target label.

Without a source (scenario 2) it is the target-only twin of the network
family: the same network, adversary and all, on the target speaker alone.
skorch draws from torch's global generator, so ``fit`` seeds it from
``random_state`` first; results depend on ``random_state`` alone.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted
from torch import nn

from crossemo.methods._common import MostProbableMixin, check_fit_inputs, check_predict_inputs, check_unlabelled, derive_seed, normalised_rows, ordered_labels
from crossemo.methods._torch import check_positive_int, single_thread
from crossemo.methods.speaker_norm import speaker_zscore

_TRAINING = 1


class _Network(nn.Module):
    """Input dropout, one hidden ReLU layer (``feature``, the adversary's input), a linear output."""

    def __init__(self, n_features: int, hidden: int, n_classes: int, dropout: float):
        super().__init__()
        self.feature = nn.Sequential(nn.Dropout(dropout), nn.Linear(n_features, hidden), nn.ReLU())
        self.output = nn.Linear(hidden, n_classes)

    def forward(self, x, sample_domain=None, sample_weight=None, **_):
        # skada passes its routing arguments to the module; the network does not need them.
        return self.output(self.feature(x))


def build_net(*, n_features: int, n_classes: int, hidden: int, dropout: float, reg: float, epochs: int, batch_size: int, learning_rate: float):
    """The skada network :class:`DANN` trains, unfitted and uninitialised (its ``net_config_`` rebuilds a fitted one).

    Args:
        n_features: input features.
        n_classes: output units, one per class of ``classes_``.
        hidden, dropout, epochs, batch_size, learning_rate: checked values of the method's parameters.
        reg: weight of the domain-adversarial loss (0 when ``fit`` had no unlabelled rows).

    Returns:
        a ``skada.deep`` ``DomainAwareNet`` on the CPU.
    """
    from skada.deep import DANN as SkadaDANN

    return SkadaDANN(
        _Network(n_features, hidden, n_classes, dropout),
        layer_name="feature", reg=reg, num_features=hidden,
        max_epochs=epochs, batch_size=batch_size, optimizer=torch.optim.Adam, lr=learning_rate,
        train_split=None, verbose=0, device="cpu",
    )


def _number(method: BaseEstimator, name: str) -> float:
    """A parameter that must be a real number, as a float."""
    value = getattr(method, name)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number; got {value!r}")
    return float(value)


class DANN(MostProbableMixin, ClassifierMixin, BaseEstimator):
    """Domain-adversarial network (skada) on per-speaker z-normalised features.

    Parameters:
        hidden: units of the hidden (feature) layer, ≥ 1.
        dropout: dropout rate on the input, in [0, 1).
        reg: weight of the domain-adversarial loss, ≥ 0.
        epochs: training epochs, ≥ 1.
        batch_size: rows per batch and domain, ≥ 1.
        learning_rate: Adam's learning rate, > 0.
        random_state: seed of initialisation, dropout and batches.

    Attributes:
        net_: the fitted ``skada.deep`` network.
        net_config_: the arguments of :func:`build_net` that made ``net_`` (JSON values), so a
            saved model can rebuild the network and load its weights.
        classes_: the labels seen in training, the study's emotions first in their order.
        n_features_in_: number of input features.
    """

    def __init__(self, *, hidden: int = 256, dropout: float = 0.2, reg: float = 1.0, epochs: int = 10, batch_size: int = 64, learning_rate: float = 1e-3, random_state: int = 0):
        self.hidden = hidden
        self.dropout = dropout
        self.reg = reg
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.random_state = random_state

    def fit(self, X, y, *, is_target, speakers, X_unlabelled=None, speakers_unlabelled=None) -> DANN:
        """Train the network on the labelled rows, adversarially against the unlabelled rows."""
        hidden, epochs, batch_size = (check_positive_int(getattr(self, name), name) for name in ("hidden", "epochs", "batch_size"))
        dropout, reg, learning_rate = (_number(self, name) for name in ("dropout", "reg", "learning_rate"))
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout!r}")
        if reg < 0 or learning_rate <= 0:
            raise ValueError(f"reg must be >= 0 and learning_rate > 0; got reg={self.reg!r}, learning_rate={self.learning_rate!r}")
        X, y, is_target, speakers = check_fit_inputs(X, y, is_target, speakers)
        unlabelled, unlabelled_speakers = check_unlabelled(X_unlabelled, speakers_unlabelled, X.shape[1])
        seed = derive_seed(self.random_state, _TRAINING)
        self.n_features_in_ = X.shape[1]
        self.classes_ = ordered_labels(y)
        position = {label: i for i, label in enumerate(self.classes_)}
        labelled = speaker_zscore(X, speakers)
        targets = np.array([position[label] for label in y])
        repeats = np.ones(len(y), dtype=int)
        if is_target.any() and (~is_target).any():
            repeats[is_target] = max(1, round((~is_target).sum() / is_target.sum()))
        labelled, targets = np.repeat(labelled, repeats, axis=0), np.repeat(targets, repeats)
        rows = np.vstack([labelled, speaker_zscore(unlabelled, unlabelled_speakers)]) if len(unlabelled) else labelled
        labels = np.concatenate([targets, np.full(len(unlabelled), -1)])
        domains = np.concatenate([np.ones(len(labelled), int), np.full(len(unlabelled), -1)])
        if not len(unlabelled):
            # skada's balanced loader needs both domains; without test audio the "target" is the labelled rows again.
            rows, labels, domains = np.vstack([rows, rows]), np.concatenate([labels, np.full(len(rows), -1)]), np.concatenate([domains, -domains])
        with single_thread():
            torch.manual_seed(seed)
            self.net_config_ = {
                "n_features": X.shape[1], "n_classes": len(self.classes_), "hidden": hidden, "dropout": dropout,
                "reg": reg if len(unlabelled) else 0.0, "epochs": epochs, "learning_rate": learning_rate,
                # skada's epoch is the larger domain's rows rounded *down* to whole
                # batches: with both domains under one batch it would train no step at all.
                "batch_size": min(batch_size, int(max((domains > 0).sum(), (domains < 0).sum()))),
            }
            self.net_ = build_net(**self.net_config_)
            with warnings.catch_warnings():
                # skada's domain classifier calls softmax without a dim; torch's deprecation note is noise here.
                warnings.filterwarnings("ignore", message="Implicit dimension choice for softmax", category=UserWarning)
                self.net_.fit(rows.astype(np.float32), labels.astype(np.int64), sample_domain=domains)
        return self

    def predict_proba(self, X, *, speakers) -> np.ndarray:
        """Softmax over ``classes_`` (n × len(classes_)), every test speaker normalised by their own rows."""
        check_is_fitted(self, "net_")
        X, speakers = check_predict_inputs(X, speakers, self.n_features_in_)
        with single_thread():
            # skorch applies the softmax of a cross-entropy classifier itself.
            return normalised_rows(self.net_.predict_proba(speaker_zscore(X, speakers).astype(np.float32), sample_domain=-np.ones(len(X), int)))
