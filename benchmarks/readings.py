"""Benchmark: choose the ``fcnn`` reading on source data only (issue 11, "Evidence for every default").

The study fixes the FCNN's architecture but not how it is trained. This
script scores candidate readings without ever touching a target corpus: for
each shared corpus *used as a source*, it simulates scenario 3 inside that
corpus.

- The corpus's speakers (sorted) are dealt into folds (``speakers[k::n]``):
  3 folds for EMOVO (6 speakers: 4 train, 2 held out), 4 for RAVDESS
  (24 speakers: 18 train, 6 held out).
- Per fold, the source network (:class:`~crossemo.methods.SourceFCNN`) is
  trained on the training speakers only (with early stopping, ``fit`` itself
  holds one of *those* speakers out).
- Each held-out speaker in turn plays the target's single training speaker:
  the network is fine-tuned on that speaker's rows
  (:class:`~crossemo.methods.FineTunedFCNN` with the fold's source network)
  and scored by UAR (the 4 emotions) on the fold's *other* held-out speakers.
- A corpus's score is the mean UAR over its (fold, fine-tuning speaker)
  cells; a candidate's score is the mean over both corpora and over the seeds.

No row of the other corpus is read: the features of each corpus are used only
when it plays the source. Both corpora do play it, so in the grid's shared
pairs each target corpus helped choose the reading (its labels included): a
small selection bias in those pairs' figures, none on a corpus not used here.

**The rule, fixed before running.** A small sequential search, in the order of
:data:`STAGES`: each stage tries its candidates on top of the reading kept so
far; the candidate with the highest score is kept, and the current reading
stays unless a candidate beats it strictly. A candidate whose CPU time per
validation fold (one source fit and its fine-tunings, mean over corpora and
seeds) exceeds 1.5 × the starting reading's (the grid's time budget) is not
eligible. Early stopping, where tried, keeps
``epochs`` as its maximum.

    python benchmarks/readings.py [--features DIR] [--seeds 0,1,2] [--out DIR]
    python benchmarks/readings.py --cross-corpus [--features DIR] [--seeds 0,1,2]
    python benchmarks/readings.py --method dbn [--features DIR] [--seeds 0,1] [--out DIR]

``--method dbn`` runs the same kind of search for ``dbn``, which trains on the
source and the target speaker together: per fold, the network is fitted on
the training speakers (``is_target=False``) plus one held-out speaker
(``is_target=True``) and scored on the fold's other held-out speakers. As a
DBN fit is one per cell, RAVDESS uses the first 2 held-out speakers of each
fold as fine-tuning speakers (EMOVO: both); the rule is the same
(:data:`DBN_STAGES`).

``--cross-corpus`` is for information only, *after* the choice and never used
to make it: it runs the old reading and the current defaults in the real
scenario 3 of both shared pairs (whole source + one target speaker, tested on
the other target speakers, mean UAR over folds and seeds) and reports the CPU
seconds of one source fit and of one fine-tuning on the full corpora.

``--features`` holds ``emovo.parquet`` and ``ravdess.parquet`` as the grid's
feature store writes them. Prints one line per candidate and the stage
tables in Markdown; writes every cell to ``OUT/readings_cells.csv`` and the
summary to ``OUT/readings.csv``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core: the grid runs beside other work

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from crossemo.labels import EMOTIONS  # noqa: E402
from crossemo.metrics import score  # noqa: E402
from crossemo.methods import FineTunedFCNN, SourceFCNN  # noqa: E402
from crossemo.protocol import Dataset, Task, split  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

CORPORA = {"emovo": 3, "ravdess": 4}
"""Corpus → number of speaker folds of the within-source simulation."""

START: dict = {}
"""The reading before issue 11: every parameter at its old default."""

STAGES: list[tuple[str, list[dict]]] = [
    ("input scaling", [{"scaling": "speaker"}]),
    ("learning rate", [{"learning_rate": 3e-4}, {"learning_rate": 1e-4}]),
    ("dropout", [{"dropout": 0.2}, {"dropout": 0.5}]),
    ("epochs", [{"epochs": 10}, {"epochs": 30, "early_stopping": True, "patience": 5}]),
    ("fine-tuned layers", [{"finetune_layers": 2}]),
]
"""The search, in order: per stage, the candidates tried besides the reading kept so far."""

DBN_STAGES: list[tuple[str, list[dict]]] = [
    ("input scaling", [{"scaling": "speaker"}]),
    ("fine-tuning learning rate", [{"finetune_learning_rate": 1e-4}]),
    ("fine-tuning epochs", [{"finetune_epochs": 10}, {"finetune_epochs": 30}]),
]
"""The ``dbn`` search, in order (Latif et al.'s own values were not at hand, see :mod:`crossemo.methods.dbn`)."""

DBN_TUNING_SPEAKERS = {"emovo": 2, "ravdess": 2}
"""Per fold, how many held-out speakers take the target speaker's part in the ``dbn`` search."""

BUDGET = 1.5
"""A candidate may cost at most this multiple of the starting reading's CPU time per fit."""


def folds(dataset: Dataset, n_folds: int) -> list[np.ndarray]:
    """The held-out speakers of every fold: the sorted speakers dealt round-robin."""
    speakers = np.array(dataset.speaker_ids())
    return [speakers[k::n_folds] for k in range(n_folds)]


def validate(dataset: Dataset, n_folds: int, params: dict, seed: int) -> tuple[list[dict], float]:
    """Every (fold, fine-tuning speaker) cell of one corpus as the source; returns the cells and the CPU seconds spent."""
    cells, cpu = [], 0.0
    for fold, held_out in enumerate(folds(dataset, n_folds)):
        train = ~np.isin(dataset.speakers, held_out)
        method = FineTunedFCNN(**params, random_state=seed)
        started = time.process_time()
        source = SourceFCNN(**method.source_params()).fit(dataset.X[train], dataset.y[train], speakers=dataset.speakers[train])
        cpu += time.process_time() - started
        for speaker in held_out:
            tune = dataset.speakers == speaker
            test = np.isin(dataset.speakers, held_out) & ~tune
            started = time.process_time()
            model = FineTunedFCNN(**params, source_model=source, random_state=seed).fit(
                dataset.X[tune], dataset.y[tune], is_target=np.ones(tune.sum(), bool), speakers=dataset.speakers[tune])
            cpu += time.process_time() - started
            predicted = model.predict(dataset.X[test], speakers=dataset.speakers[test])
            _, uar = score(dataset.y[test], predicted, classes=list(EMOTIONS))
            cells.append({"fold": fold, "tuned_on": speaker, "uar": uar, "best_epoch": source.best_epoch_})
    return cells, cpu / n_folds


OLD_READING = {"scaling": "source", "learning_rate": 1e-3, "dropout": 0.0, "epochs": 20, "early_stopping": False, "finetune_layers": 1}
"""The reading before issue 11, spelled out (the defaults have changed since)."""

OLD_DBN_READING = {"scaling": "training", "finetune_epochs": 20}
"""The ``dbn``'s reading before issue 11, spelled out."""


def cross_corpus_dbn(datasets: dict[str, Dataset], seeds: list[int], readings: list[str]) -> None:
    """Information only, after the choice: the ``dbn`` in scenario 3 of both pairs (one fit per fold)."""
    from crossemo.methods import DBN

    print("dbn, scenario 3 across corpora, UAR % (mean over target folds, then seeds) -- after the choice, not used to choose")
    print("| reading | EMOVO→RAVDESS | RAVDESS→EMOVO | fit CPU s per fold (EMOVO→RAVDESS, RAVDESS→EMOVO) |")
    print("| --- | --- | --- | --- |")
    for name in readings:
        params = OLD_DBN_READING if name == "old" else {}
        uars, cpu = {}, {}
        for source_name, target_name in (("emovo", "ravdess"), ("ravdess", "emovo")):
            source, target = datasets[source_name], datasets[target_name]
            per_seed, seconds = [], []
            for seed in seeds:
                folds_uar = []
                for speaker in target.speaker_ids():
                    train, test = scenario3_fold(source, target, speaker)
                    started = time.process_time()
                    model = DBN(**params, random_state=seed).fit(train["X"], train["y"], is_target=train["is_target"], speakers=train["speakers"])
                    seconds.append(time.process_time() - started)
                    predicted = model.predict(test["X"], speakers=test["speakers"])
                    folds_uar.append(score(test["y"], predicted, classes=sorted(set(target.y)))[1])
                per_seed.append(np.mean(folds_uar))
            uars[source_name] = 100 * float(np.mean(per_seed))
            cpu[source_name] = float(np.mean(seconds))
        print(f"| {name} | {uars['emovo']:.1f} | {uars['ravdess']:.1f} | {cpu['emovo']:.2f}, {cpu['ravdess']:.2f} |", flush=True)


def scenario3_fold(source: Dataset, target: Dataset, speaker: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The protocol's own scenario-3 fold: the source plus ``speaker`` to train on, the other target speakers to test on."""
    return split(Task(3, "readings", source.corpus, target.corpus, speaker), source, target)


def cross_corpus(datasets: dict[str, Dataset], seeds: list[int]) -> None:
    """Information only, after the choice: scenario 3 of both pairs, old reading against the current defaults."""
    print("Scenario 3 across corpora, UAR % (mean over target folds, then seeds) -- after the choice, not used to choose")
    print("| reading | EMOVO→RAVDESS | RAVDESS→EMOVO | source fit CPU s (EMOVO, RAVDESS) | fine-tuning CPU s per fold |")
    print("| --- | --- | --- | --- | --- |")
    for name, params in (("old", OLD_READING), ("new (defaults)", {})):
        uars, fits, tunes = {}, {}, []
        for source_name, target_name in (("emovo", "ravdess"), ("ravdess", "emovo")):
            source, target = datasets[source_name], datasets[target_name]
            per_seed, fit_cpu = [], []
            for seed in seeds:
                method = FineTunedFCNN(**params, random_state=seed)
                started = time.process_time()
                network = SourceFCNN(**method.source_params()).fit(source.X, source.y, speakers=source.speakers)
                fit_cpu.append(time.process_time() - started)
                folds_uar = []
                for speaker in target.speaker_ids():
                    train, test = scenario3_fold(source, target, speaker)
                    started = time.process_time()
                    model = FineTunedFCNN(**params, source_model=network, random_state=seed).fit(train["X"], train["y"], is_target=train["is_target"], speakers=train["speakers"])
                    tunes.append(time.process_time() - started)
                    predicted = model.predict(test["X"], speakers=test["speakers"])
                    folds_uar.append(score(test["y"], predicted, classes=sorted(set(target.y)))[1])
                per_seed.append(np.mean(folds_uar))
            uars[(source_name, target_name)] = 100 * float(np.mean(per_seed))
            fits[source_name] = float(np.mean(fit_cpu))
        print(f"| {name} | {uars[('emovo', 'ravdess')]:.1f} | {uars[('ravdess', 'emovo')]:.1f} | "
              f"{fits['emovo']:.2f}, {fits['ravdess']:.2f} | {np.mean(tunes):.3f} |", flush=True)


def validate_joint(dataset: Dataset, n_folds: int, params: dict, seed: int, *, tuning_speakers: int) -> tuple[list[dict], float]:
    """The ``dbn`` cells: trained on the fold's training speakers plus one held-out speaker, tested on the other held-out ones."""
    from crossemo.methods import DBN

    cells, cpu = [], 0.0
    for fold, held_out in enumerate(folds(dataset, n_folds)):
        source = ~np.isin(dataset.speakers, held_out)
        for speaker in held_out[:tuning_speakers]:
            tune = dataset.speakers == speaker
            rows = source | tune
            test = np.isin(dataset.speakers, held_out) & ~tune
            started = time.process_time()
            model = DBN(**params, random_state=seed).fit(dataset.X[rows], dataset.y[rows], is_target=tune[rows], speakers=dataset.speakers[rows])
            cpu += time.process_time() - started
            predicted = model.predict(dataset.X[test], speakers=dataset.speakers[test])
            _, uar = score(dataset.y[test], predicted, classes=list(EMOTIONS))
            cells.append({"fold": fold, "tuned_on": speaker, "uar": uar, "best_epoch": float("nan")})
    return cells, cpu / n_folds


def label(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "old defaults"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default=str(ROOT / "out" / "grid" / "features"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default=str(ROOT / "out" / "readings"))
    parser.add_argument("--cross-corpus", action="store_true", help="information only, after the choice: scenario 3 across corpora")
    parser.add_argument("--method", choices=("fcnn", "dbn"), default="fcnn")
    parser.add_argument("--readings", default="old,new", help="with --cross-corpus --method dbn: which readings to run")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    datasets = {name: Dataset.from_frame(pd.read_parquet(Path(args.features) / f"{name}.parquet")) for name in CORPORA}
    if args.cross_corpus:
        if args.method == "dbn":
            cross_corpus_dbn(datasets, seeds, args.readings.split(","))
        else:
            cross_corpus(datasets, seeds)
        return
    out = Path(args.out) / ("" if args.method == "fcnn" else args.method)
    out.mkdir(parents=True, exist_ok=True)
    stages = STAGES if args.method == "fcnn" else DBN_STAGES

    def cells_of(name: str, n_folds: int, params: dict, seed: int):
        if args.method == "fcnn":
            return validate(datasets[name], n_folds, params, seed)
        return validate_joint(datasets[name], n_folds, params, seed, tuning_speakers=DBN_TUNING_SPEAKERS[name])

    all_cells, summary = [], []

    def run(stage: str, params: dict) -> dict:
        started = time.perf_counter()
        row = {"stage": stage, "reading": label(params)}
        cpu = []
        for name, n_folds in CORPORA.items():
            per_seed = []
            for seed in seeds:
                cells, seconds = cells_of(name, n_folds, params, seed)
                cpu.append(seconds)
                per_seed.append(np.mean([c["uar"] for c in cells]))
                all_cells.extend({"stage": stage, "reading": row["reading"], "source": name, "seed": seed, **c} for c in cells)
            row[name] = 100 * float(np.mean(per_seed))
            row[f"{name}_seed_sd"] = 100 * float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else float("nan")
        row["mean"] = float(np.mean([row[name] for name in CORPORA]))
        row["cpu_per_fold_s"] = float(np.mean(cpu))
        summary.append(row)
        pd.DataFrame(all_cells).to_csv(out / "readings_cells.csv", index=False)
        pd.DataFrame(summary).to_csv(out / "readings.csv", index=False)
        print(f"[{time.perf_counter() - started:6.1f} s] {stage}: {row['reading']}: "
              f"emovo {row['emovo']:.1f}, ravdess {row['ravdess']:.1f}, mean {row['mean']:.2f}, cpu/fold {row['cpu_per_fold_s']:.2f} s", flush=True)
        return row

    current = dict(START)
    best = run("start", current)
    budget = BUDGET * best["cpu_per_fold_s"]
    for stage, candidates in stages:
        kept = best
        for candidate in candidates:
            params = {**current, **candidate}
            row = run(stage, params)
            row["eligible"] = row["cpu_per_fold_s"] <= budget
            if row["eligible"] and row["mean"] > kept["mean"]:
                kept, kept_params = row, params
        if kept is not best:
            best, current = kept, kept_params
        print(f"== after {stage}: {label(current)} (mean {best['mean']:.2f})", flush=True)
    pd.DataFrame(summary).to_csv(out / "readings.csv", index=False)

    print("\n| stage | reading | EMOVO as source | RAVDESS as source | mean | CPU s per fold |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in summary:
        flag = "" if row.get("eligible", True) else " (over budget)"
        print(f"| {row['stage']} | {row['reading']}{flag} | {row['emovo']:.1f} ± {row['emovo_seed_sd']:.1f} | "
              f"{row['ravdess']:.1f} ± {row['ravdess_seed_sd']:.1f} | {row['mean']:.2f} | {row['cpu_per_fold_s']:.2f} |")
    print(f"\nchosen: {label(current)}  (± is the sd over seeds {args.seeds})")


if __name__ == "__main__":
    main()
