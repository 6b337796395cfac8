"""Torch helpers of the neural methods: one thread, seeded generators, seeded layers.

Every torch computation of ``dbn`` and ``fcnn`` runs inside
:func:`single_thread` (Ray runs many fits side by side, so each stays on one
core) and draws its randomness only from explicit ``torch.Generator``
objects, never from torch's global generator, so results depend on
``random_state`` alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from crossemo.methods._common import derive_seed


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, restoring the previous setting afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def generator(random_state: int, purpose: int) -> torch.Generator:
    """A CPU generator seeded for one purpose of one method."""
    return torch.Generator().manual_seed(derive_seed(random_state, purpose))


def linear(n_in: int, n_out: int, gen: torch.Generator) -> nn.Linear:
    """A ``Linear`` layer with torch's default initialisation, drawn from ``gen``."""
    layer = nn.utils.skip_init(nn.Linear, n_in, n_out)
    bound = 1.0 / math.sqrt(n_in)
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=gen)
        layer.bias.uniform_(-bound, bound, generator=gen)
    return layer


def as_tensor(X: np.ndarray) -> torch.Tensor:
    """Features as a contiguous float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))


class SeededDropout(nn.Module):
    """Dropout whose masks come from an explicit generator, not torch's global one.

    The generator is attached only while a training function runs
    (:func:`train_classifier`, :func:`train_with_early_stopping`) and is
    detached afterwards, so a fitted network stays picklable and holds no
    random state. In evaluation mode it is the identity.
    """

    def __init__(self, p: float):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)) or not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be a number in [0, 1); got {p!r}")
        self.p = float(p)
        self.gen: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.gen is None:
            raise RuntimeError("SeededDropout trains only inside a training function that gives it a generator")
        keep = torch.rand(x.shape, generator=self.gen) >= self.p
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


@contextmanager
def _dropout_drawing_from(model: nn.Module, gen: torch.Generator) -> Iterator[None]:
    dropouts = [m for m in model.modules() if isinstance(m, SeededDropout)]
    for module in dropouts:
        module.gen = gen
    try:
        yield
    finally:
        for module in dropouts:
            module.gen = None


def _one_epoch(model, optimiser, loss_fn, inputs, targets, batch_size, gen) -> float:
    n = inputs.shape[0]
    order = torch.randperm(n, generator=gen)
    total = 0.0
    model.train()
    for start in range(0, n, batch_size):
        batch = order[start:start + batch_size]
        optimiser.zero_grad()
        loss = loss_fn(model(inputs[batch]), targets[batch])
        loss.backward()
        optimiser.step()
        total += float(loss.detach()) * len(batch)
    model.eval()
    return total / n


def train_classifier(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, epochs: int, batch_size: int, learning_rate: float, weight_decay: float, gen: torch.Generator) -> list[float]:
    """Minimise the cross-entropy of ``model``'s logits with Adam on shuffled mini-batches.

    Only parameters with ``requires_grad`` are updated. Dropout masks
    (:class:`SeededDropout`) are drawn from ``gen`` too.

    Returns:
        the mean training loss of every epoch.
    """
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(parameters, lr=learning_rate, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    with _dropout_drawing_from(model, gen):
        losses = [_one_epoch(model, optimiser, loss_fn, inputs, targets, batch_size, gen) for _ in range(epochs)]
    model.eval()
    return losses


def train_with_early_stopping(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, validation: tuple[torch.Tensor, torch.Tensor], *, max_epochs: int, patience: int, batch_size: int, learning_rate: float, weight_decay: float, gen: torch.Generator) -> tuple[list[float], list[float], int]:
    """:func:`train_classifier` for at most ``max_epochs``, keeping the epoch with the lowest validation loss.

    After every epoch the mean cross-entropy of the (eval-mode) model on
    ``validation = (inputs, targets)`` is measured; training stops once it
    has not improved for ``patience`` epochs, and the model's parameters are
    restored to those of its best epoch.

    Returns:
        the training loss and the validation loss of every epoch run, and the
        best epoch (1-based: the number of epochs the returned model had).
    """
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(parameters, lr=learning_rate, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    losses, validation_losses = [], []
    best_loss, best_epoch, best_state = math.inf, 0, None
    with _dropout_drawing_from(model, gen):
        for epoch in range(1, max_epochs + 1):
            losses.append(_one_epoch(model, optimiser, loss_fn, inputs, targets, batch_size, gen))
            with torch.no_grad():
                validation_losses.append(float(loss_fn(model(validation[0]), validation[1])))
            if validation_losses[-1] < best_loss:
                best_loss, best_epoch = validation_losses[-1], epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            elif epoch - best_epoch >= patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return losses, validation_losses, best_epoch


def check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return int(value)


def check_sizes(sizes, name: str) -> tuple[int, ...]:
    """Layer sizes as a tuple of positive ints (a list from a JSON config is fine)."""
    try:
        sizes = tuple(sizes)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of positive ints; got {sizes!r}") from None
    if not sizes:
        raise ValueError(f"{name} needs at least one layer")
    return tuple(check_positive_int(size, name) for size in sizes)
