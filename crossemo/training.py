"""One model for new audio: a method fitted on the source corpora and every labelled target speaker.

``crossemo train`` ends an evaluation's question ("would borrowing help?")
with its answer in hand: the chosen method, fitted exactly as an evaluation
task fits it (:func:`crossemo.protocol.fit_method` on
:func:`crossemo.protocol.training_rows`), but on *all* the target's labelled
speakers instead of one. Choosing the method uses the evaluation's results,
which were computed on folds of the target's speakers; that choice is the
user's, made before any new audio is seen.

No Ray here: :mod:`crossemo.orchestration` and :mod:`crossemo.cli` bring the
features; this module picks the method and fits it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from crossemo import methods, protocol
from crossemo.report import tables

BEST = "best"
"""``--method best``: the best mean UAR of the pair in a finished evaluation (``--from-run``)."""

class TrainingError(ValueError):
    """The model cannot be trained as asked; the message names the cause."""


@dataclass(frozen=True)
class Choice:
    """The method to train and why.

    Attributes:
        method: a key of :data:`crossemo.methods.METHODS`.
        with_source: train on the source corpora too (False: the target alone,
            as Table 3's Baseline RF and ``target_only_*`` columns are).
        column: the Table 3 column it stands for (``rf`` with a source is Table 2's scenario 3).
        reason: one sentence for the user and ``model.json``.
    """

    method: str
    with_source: bool
    column: str
    reason: str


def _needs_source(method: str) -> bool:
    """Whether a method cannot be trained on the target alone (the fcnn fine-tunes a source network, the adapters map source rows)."""
    return methods.speakers_needed(methods.make_method(method))[0] > 0


def choose(spec: str | None, *, results: pd.DataFrame | None, source: str | None, target: str) -> Choice:
    """The method ``--method`` asks for.

    Args:
        spec: a method name, ``target_only_<method>`` (the target alone),
            :data:`BEST`, or ``None`` for :data:`crossemo.methods.RECOMMENDED`.
        results: a finished evaluation's per-utterance results (needed for :data:`BEST`).
        source: the pooled source's name (``emovo+ravdess``), ``None`` without one.
        target: the target corpus.

    Raises:
        TrainingError: an unknown method, :data:`BEST` without results or
            without this pair in them, or a method that needs a source without one.
    """
    if spec is None:
        with_source = source is not None
        choice = Choice(methods.RECOMMENDED, with_source, results_column(methods.RECOMMENDED, with_source=with_source), "the recommended method")
    elif spec == BEST:
        choice = _best(results, source, target)
    else:
        method = spec.removeprefix(tables.TWIN_PREFIX)
        if method not in methods.METHODS:
            raise TrainingError(f"unknown method {spec!r}; known: {BEST}, {', '.join(methods.METHODS)} (or target_only_<method>)")
        with_source = source is not None and not spec.startswith(tables.TWIN_PREFIX)
        choice = Choice(method, with_source, results_column(method, with_source=with_source), f"asked for as {spec}")
    if choice.with_source is False and _needs_source(choice.method):
        if spec is not None and spec.startswith(tables.TWIN_PREFIX):
            alone = [name for name in methods.METHODS if not _needs_source(name)]
            raise TrainingError(f"{choice.method} learns from a source corpus, so it has no target-only form; target-only methods: {', '.join(alone)}")
        raise TrainingError(f"{choice.method} learns from a source corpus; give one with --corpus besides the target")
    if source is None and spec != BEST and not (spec or "").startswith(tables.TWIN_PREFIX):
        # Training on the target alone when a transfer was asked for would hand over another model than the one named.
        raise TrainingError(
            f"--method {spec or choice.method} trains on source corpora and the target, but no corpus besides {target} is given; add one with --corpus "
            f"(with --from-run, --corpus replaces the run's corpora: list those too), or train on the target alone with --method {tables.TWIN_PREFIX}{choice.method}"
        )
    return choice


def results_column(method: str, *, with_source: bool) -> str:
    """The column of the tables whose figures a model's training matches.

    Table 3's: ``rf`` on the target alone is the Baseline RF, another method
    alone its twin ``target_only_<method>``, a transfer method with a source
    its own name; the RF with a source is Table 2's ``scenario3``.
    """
    if method == "rf":
        return "scenario3" if with_source else "rf"
    return method if with_source else f"{tables.TWIN_PREFIX}{method}"


def model_of_column(column: str) -> tuple[str, bool]:
    """The inverse of :func:`results_column`: ``(method, with_source)`` of a tables column."""
    if column in ("rf", "scenario3"):
        return "rf", column == "scenario3"
    return column.removeprefix(tables.TWIN_PREFIX), not column.startswith(tables.TWIN_PREFIX)


def _best(results: pd.DataFrame | None, source: str | None, target: str) -> Choice:
    if results is None:
        raise TrainingError(f"--method {BEST} needs --from-run OUT, a finished evaluation to take the best method from")
    ranking = ranking_of(results, source, target)
    if ranking.empty:
        hint = " (no corpus besides the target is given: with --from-run, --corpus replaces the run's corpora, so list those too)" if source is None else ""
        raise TrainingError(f"the evaluation under --from-run has no results for the pair {source or '-'} → {target}{hint}")
    top = ranking.iloc[0]
    with_source = bool(top["with_source"])
    return Choice(str(top["method"]), with_source, str(top["column"]), f"best mean UAR of the pair in the evaluation ({top['uar']:.1f} %)")


def ranking_of(results: pd.DataFrame, source: str | None, target: str) -> pd.DataFrame:
    """Every model the evaluation has for the pair, best mean UAR first.

    The candidates are Table 3's columns (the Baseline RF and the target-only
    twins on the target alone, the transfer methods with the source) and
    Table 2's scenario 3 (the RF on source and target); ``majority`` is none.

    Returns:
        ``column``, ``method``, ``with_source`` and the :func:`evaluation_of` figures, one row per candidate.
    """
    folds = tables.seed_averaged(tables.fold_metrics(results))
    cells = tables.cell_folds(folds, source or "", target)
    candidates = {column: rows for column, rows in cells.items() if column in tables.TABLE3_METHODS and column != "majority"}
    candidates["scenario3"] = cells["scenario3"]
    rows = []
    for column, fold_rows in candidates.items():
        if fold_rows.empty:
            continue
        method, with_source = model_of_column(column)
        if with_source and source is None:
            continue
        rows.append({"column": column, "method": method, "with_source": with_source, **evaluation_of(fold_rows)})
    frame = pd.DataFrame(rows, columns=["column", "method", "with_source", "uar", "uar_sd", "accuracy", "accuracy_sd", "folds"])
    # Ties go to the simpler model: on the target alone, then Table 3's order.
    order = {column: i for i, column in enumerate([*tables.TABLE3_METHODS, "scenario3"])}
    frame["order"] = frame["column"].map(order)
    return frame.sort_values(["uar", "with_source", "order"], ascending=[False, True, True]).drop(columns="order").reset_index(drop=True)


def evaluation_of(fold_rows: pd.DataFrame) -> dict[str, Any]:
    """Mean UAR and accuracy over folds (percent) with their sample standard deviations, and the fold count."""
    uar, accuracy = tables.per_fold(fold_rows, "uar") * 100, tables.per_fold(fold_rows, "accuracy") * 100
    spread = (lambda values: float(values.std(ddof=1)) if len(values) > 1 else 0.0)
    return {"uar": float(uar.mean()), "uar_sd": spread(uar), "accuracy": float(accuracy.mean()), "accuracy_sd": spread(accuracy), "folds": int(len(uar))}


def fit(choice: Choice, *, source: protocol.Dataset | None, target: protocol.Dataset, seed: int, params: tuple[tuple[str, Any], ...] = (), unlabelled: tuple[np.ndarray, np.ndarray] | None = None) -> Any:
    """Fit the chosen method on the source (if the choice takes it) and every labelled target row.

    Args:
        choice: from :func:`choose`.
        source: the pooled source corpora, ``None`` without any.
        target: the target corpus; all its rows are training rows (``is_target``).
        seed: the method's ``random_state``.
        params: the method's other parameters.
        unlabelled: features (m × d) and speaker ids of target-domain audio
            without labels, for the methods that adapt to it.

    Returns:
        the fitted method.

    Raises:
        TrainingError: the target has no labelled row.
    """
    if len(target.y) == 0:
        raise TrainingError(f"target {target.corpus} has no labelled utterance with features")
    source = protocol.usable_source(source, target) if source is not None and choice.with_source else None
    train = protocol.training_rows(source, target, np.ones(len(target.y), bool))
    # No shared preparation: an evaluation shares the fcnn's source network
    # between folds, but its fit trains the same network from the same rows
    # and seed itself, and a bundle keeps parameters, not fitted objects.
    return protocol.fit_method(choice.method, train, seed=seed, params=params, unlabelled=unlabelled)
