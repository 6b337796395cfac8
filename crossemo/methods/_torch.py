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


def train_classifier(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, epochs: int, batch_size: int, learning_rate: float, weight_decay: float, gen: torch.Generator) -> list[float]:
    """Minimise the cross-entropy of ``model``'s logits with Adam on shuffled mini-batches.

    Only parameters with ``requires_grad`` are updated.

    Returns:
        the mean training loss of every epoch.
    """
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(parameters, lr=learning_rate, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    n = inputs.shape[0]
    losses = []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, batch_size):
            batch = order[start:start + batch_size]
            optimiser.zero_grad()
            loss = loss_fn(model(inputs[batch]), targets[batch])
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch)
        losses.append(total / n)
    model.eval()
    return losses


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
