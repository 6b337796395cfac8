"""``crossemo train`` and ``crossemo predict``: from an evaluation to a model bundle, and from a bundle to labels.

Both check everything they can before any Ray work (bad input ends with one
line and exit status 2, see :mod:`crossemo.cli`); both start Ray only when
there is audio to extract or label.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import crossemo
from crossemo import audio, corpora, featurestore, inputs, methods, pipeline, prediction, protocol, storage, training
from crossemo.features import FeatureExtractor

DEFAULT_STORE = "~/.cache/crossemo"
"""Where ``train`` keeps features when neither ``--store`` nor ``--from-run`` says (``CROSSEMO_STORE`` overrides)."""

UNSET_PARAMS = ("random_state", "source_model")
"""Parameters a bundle does not list: the seed is recorded apart, the fcnn's source network is part of the fit."""


def print_warnings(warnings: list[str]) -> None:
    """Print each warning as one ``warning: …`` line on stderr, apart from the results on stdout."""
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


MAX_REASON_LINES = 30
"""Kinds of reason a summary lists for the files it could not use; the rest are counted."""

_PATH_IN_REASON = r"(?:[a-z][a-z0-9+.-]*://)?\S*/\S*"


def print_unused(rejected: pd.DataFrame, *, where: str) -> None:
    """Print how many files of the corpora were not used and why, one line per corpus, stage and kind of reason.

    Args:
        rejected: ``corpus``, ``stage``, ``reason`` per file (as :func:`crossemo.featurestore.assemble` gives).
        where: where each file's own reason is, for the heading.
    """
    if not len(rejected):
        return
    print(f"\n{featurestore.count(len(rejected), 'file')} not used ({where}):")
    # Reasons that name a file (a duplicate's twin, a link's target) are
    # grouped by their kind, so one line stands for all files alike.
    kinds = rejected.assign(reason=rejected["reason"].str.replace(_PATH_IN_REASON, "…", regex=True))
    grouped = kinds.groupby(["corpus", "stage", "reason"]).size().reset_index(name="files")
    with pd.option_context("display.max_colwidth", 120):
        print(grouped.sort_values(["files", "corpus"], ascending=[False, True]).head(MAX_REASON_LINES).to_string(index=False))
    if len(grouped) > MAX_REASON_LINES:
        print(f"… and {len(grouped) - MAX_REASON_LINES} more kinds of reason")


def add_train_parser(commands: Any, add_run_options: Any) -> None:
    train = commands.add_parser("train", help="fit a method on the source corpora and every labelled target speaker; write a model bundle")
    add_run_options(train, out_help="where to write the model bundle: a new folder or s3:// prefix")
    train.add_argument("--target", required=True, help="the corpus whose speakers the model is for (one of the --corpus names)")
    train.add_argument("--method", help=f"a method, target_only_<method> (the target alone), or {training.BEST} (needs --from-run); default: the recommended {methods.RECOMMENDED}")
    train.add_argument("--from-run", dest="from_run", metavar="OUT", help="a finished evaluation: its settings, corpora and feature store are reused, and its mean UAR and accuracy for the pair and method, with their standard deviation over folds, are written into model.json's evaluation entry")
    train.add_argument("--store", help=f"feature store to read and extend (default: --from-run's, or for an evaluate run the store whose features it read; else $CROSSEMO_STORE, else {DEFAULT_STORE})")
    train.add_argument("--adapt-to", dest="adapt_to", action="append", default=[], metavar="AUDIO", help=f"unlabelled audio of the target domain (folder, s3:// prefix or table) for the methods that adapt to it ({', '.join(sorted(methods.ADAPTING))}); repeatable")
    train.add_argument("--speaker-pattern", dest="speaker_pattern", metavar="REGEX", help="with --adapt-to: a regular expression with a group named speaker, matched on each unlabelled file's URI (as predict's)")
    train.add_argument("--seed", type=int, help="the method's seed (default: the run's, else 0)")
    train.add_argument("--config", help="a TOML file with the settings (method_params …); flags override it")


def add_predict_parser(commands: Any, add_common: Any) -> None:
    predict = commands.add_parser("predict", help="label audio files with a model bundle, as a Ray batch job")
    predict.add_argument("--model", required=True, help="the model bundle (folder or s3:// prefix) written by `crossemo train`")
    predict.add_argument("--audio", action="append", default=[], required=True, help="an audio file, a folder or s3:// prefix of .wav/.flac files, or a CSV/Parquet table with a path column; repeatable")
    predict.add_argument("--out", required=True, help="output folder or s3:// prefix (predictions/, segments/)")
    predict.add_argument("--speaker-pattern", dest="speaker_pattern", metavar="REGEX", help="a regular expression with a group named speaker, matched on each file's URI")
    predict.add_argument("--segment", type=_segment_mode, metavar="SECONDS|speech", help="label long recordings window by window: fixed windows of SECONDS, or the stretches where a voice activity detector (silero-vad) finds speech")
    predict.add_argument("--hop", type=float, metavar="SECONDS", help="seconds between fixed windows' starts (default: the window length, no overlap)")
    predict.add_argument("--max-length", dest="max_length", type=float, metavar="SECONDS", help="with --segment speech: longest speech window; longer stretches are split (default 10)")
    predict.add_argument("--store", help="feature store whose cache to read and extend (default: --out)")
    add_common(predict)


def _segment_mode(text: str) -> float | str:
    """``--segment``: ``speech`` or a number of seconds."""
    if text == "speech":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number of seconds nor speech") from None


@dataclass
class TrainSetup:
    """A checked ``train`` request, before Ray."""

    config: pipeline.RunConfig
    prepared: pipeline.Prepared
    model_uri: str
    target: str
    sources: list[str]
    choice: training.Choice
    estimator: Any
    """The chosen method, unfitted, with its parameters: what the speaker checks count against."""
    evaluation: dict[str, Any] | None
    adapt_to: inputs.AudioFiles | None


def train_setup(args: argparse.Namespace, config_from: Any) -> TrainSetup:
    """Merge the run's settings, the config file and the flags; check them all.

    Raises:
        pipeline.ConfigError, training.TrainingError, inputs.InputError, storage.StorageError, corpora.CorpusError:
            one line naming the cause.
    """
    model_uri = args.out
    if not model_uri:
        raise pipeline.ConfigError("no model location given (--out MODEL)")
    options = pipeline.parse_storage_options(args.storage_option) or None
    record, results = None, None
    if args.from_run:
        record = pipeline.latest_record(args.from_run, storage_options=options)
        results = pipeline.read_results(pipeline.result_files(record, args.from_run), storage_options=options)
    config = config_from(args)
    if record is not None:
        _take_run_settings(config, record, args)
    run_store = _store_of_run(record, args.from_run, storage_options=config.fs_options) if record is not None and not args.store else None
    config.out = args.store or run_store or os.environ.get("CROSSEMO_STORE") or str(Path(DEFAULT_STORE).expanduser())
    names = [spec.name for spec in config.corpora]
    if args.target not in names:
        evaluated = {name for pair in (record or {}).get("pairs", []) for side in pair for name in side.split(protocol.SOURCE_SEPARATOR)}
        unlocated = record is not None and not record.get("corpora") and not args.corpus and args.target in evaluated
        # `evaluate` read a feature store: its record knows where only the corpora its config named are.
        hint = f"; the run under {args.from_run} evaluated a feature store and did not record where its audio is: give every corpus with --corpus NAME=URI" if unlocated else ""
        raise pipeline.ConfigError(f"--target {args.target!r} is not among the corpora ({', '.join(names) or 'none given'}){hint}")
    sources = sorted(name for name in names if name != args.target)
    source = protocol.SOURCE_SEPARATOR.join(sources) or None
    choice = training.choose(args.method, results=results, source=source, target=args.target)
    if args.adapt_to and choice.method not in methods.ADAPTING:
        raise pipeline.ConfigError(
            f"--adapt-to: {choice.method} ({choice.reason}) does not learn from unlabelled audio; the methods that do: {', '.join(sorted(methods.ADAPTING))}"
        )
    evaluation = None
    if results is not None:
        ranking = training.ranking_of(results, source, args.target)
        row = ranking[ranking["column"] == choice.column]
        evaluation = row.drop(columns=["with_source"]).iloc[0].to_dict() if len(row) else None
    params = config.method_params.get(choice.method, {})
    config.method_params = {choice.method: params} if params else {}
    prepared = pipeline.prepare(config, need_pairs=False)
    # After prepare, which checks the parameters the comparison builds the method with.
    departures = _departures(config, record, choice.method, params, feature_set_id=prepared.feature_set_id) if record is not None and results is not None else []
    if departures and args.method == training.BEST:
        # The choice itself (and the UAR its reason gives) was made on another model.
        raise pipeline.ConfigError(f"--method best picks on the run under {args.from_run}, but {departures[0]} differs from it; name the method, or evaluate these settings")
    if departures and evaluation is not None:
        # The run's figures describe the model it evaluated, not this one: a bundle must not carry them as its own.
        evaluation = None
        print_warnings([f"{'; '.join(departures)}: not as in the run under {args.from_run}, whose evaluation describes another model and is left out of model.json"])
    changed = _changed_since(record, prepared.manifests) if record is not None else []
    if changed and args.method == training.BEST:
        # The choice itself (and the UAR its reason gives) was made on the data as it was.
        raise pipeline.ConfigError(f"--method best picks on the run under {args.from_run}, but {changed[0]} changed since; run the evaluation again, or name the method")
    if changed and evaluation is not None:
        # The run's figures describe other data: a bundle must not carry them as its own.
        evaluation = None
        print_warnings([f"{changed[0]} changed since the run under {args.from_run}; its evaluation describes other data and is left out of model.json"])
    labels = {m.corpus: protocol.Labels.from_manifest(m.corpus, m.utterances) for m in prepared.manifests}
    pooled = protocol.Labels.union([labels[name] for name in sources]) if choice.with_source and sources else None
    estimator = methods.make_method(choice.method, **params)
    protocol.check_speakers(choice.method, estimator, pooled, labels[args.target])
    if storage.exists(storage.join(model_uri, "model.json"), storage_options=config.fs_options):
        raise pipeline.ConfigError(f"--out {model_uri} already holds a model bundle; give another folder or remove it first")
    # Before the write check, whose probe a bucket that refuses deletes keeps.
    occupied = storage.entries_in(model_uri, storage_options=config.fs_options)
    if occupied:
        # A bundle's files would otherwise land among a user's audio or outputs.
        raise pipeline.ConfigError(
            f"--out {model_uri} already holds other entries ({', '.join(occupied[:3])}{' …' if len(occupied) > 3 else ''}); a model bundle goes to a new or "
            "empty folder (a train stopped while saving leaves its files without model.json: remove them)"
        )
    storage.check_writable(model_uri, storage_options=config.fs_options)
    if args.speaker_pattern is not None and not args.adapt_to:
        raise pipeline.ConfigError("--speaker-pattern names the speakers of --adapt-to audio; give --adapt-to too")
    adapt_to = inputs.list_inputs(
        args.adapt_to, speaker_pattern=args.speaker_pattern, storage_options=config.fs_options, flag="--adapt-to",
        speakers_matter=prediction.normalises_test_speakers(estimator),
    ) if args.adapt_to else None
    return TrainSetup(config, prepared, model_uri, args.target, sources if choice.with_source else [], choice, estimator, evaluation, adapt_to)


def _changed_since(record: dict[str, Any], manifests: list[corpora.Manifest]) -> list[str]:
    """Corpora whose files or labels differ from what the run recorded, each as a phrase naming how.

    Compares :func:`crossemo.pipeline.corpus_fingerprint`'s ``content_digest``,
    which paths do not move; a corpus the run did not record, or recorded
    before the digest was kept, is not compared.
    """
    changed = []
    for manifest in manifests:
        then = record.get("corpora", {}).get(manifest.corpus, {})
        if "content_digest" not in then:
            continue
        now = pipeline.corpus_fingerprint(manifest)
        if now["content_digest"] != then["content_digest"]:
            count = f"{then['utterances']} → {now['utterances']} utterances" if now["utterances"] != then["utterances"] else "its files' labels or contents"
            changed.append(f"corpus {manifest.corpus} ({count})")
    return changed


RUN_SETTINGS = ("feature_set", "analysis_rate", "channel", "seed")
"""The settings of an evaluated run that decide the model it evaluated (besides the method's parameters)."""


def _departures(config: pipeline.RunConfig, record: dict[str, Any], method: str, params: dict[str, Any], *, feature_set_id: str) -> list[str]:
    """Where the model to train differs from the one the run evaluated: ``"seed 0 (the run: 7)"`` per setting.

    Settings are compared by what they mean: a feature set by its id (``IS10``
    is ``is10``; a config file by its contents), a method's parameters as the
    method takes them (a default written out is the default). A setting the
    run did not record (``None``) is no difference. ``feature_set_id`` is the
    id :func:`crossemo.pipeline.prepare` resolved for ``config``.
    """
    settings = record.get("settings", {})
    differ = []
    for name in RUN_SETTINGS:
        then, now = settings.get(name), getattr(config, name)
        if name == "feature_set":
            then = record.get("feature_set_id") or pipeline.feature_set_id_of(then, storage_options=config.fs_options) or then
            now = feature_set_id
        if then is not None and then != now:
            differ.append(f"{name} {getattr(config, name)} (the run: {settings.get(name)})")
    evaluated = (settings.get("method_params") or {}).get(method, {})
    if _effective_params(method, evaluated) != _effective_params(method, params):
        differ.append(f"the parameters of {method}, {params or 'the defaults'} (the run: {evaluated or 'the defaults'})")
    return differ


def _effective_params(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """A method's parameters as its estimator holds them, the defaults filled in (the seed and the run's own left out)."""
    held = methods.make_method(method, **params).get_params(deep=False)
    return {name: value for name, value in held.items() if name not in UNSET_PARAMS}


def _store_of_run(record: dict[str, Any], run: str, *, storage_options: dict | None) -> str:
    """The feature store whose cache the run under ``run`` read.

    ``evaluate`` reads another run's ``features/`` folder: that run's cache,
    beside it, holds the features (a feature folder without a cache beside
    it leaves the run's own). A run that extracted its own is the folder
    given now, wherever it was when it ran.
    """
    settings = record.get("settings", {})
    features = str(settings.get("features") or "").rstrip("/")
    own = storage.join(str(settings.get("out") or "").rstrip("/"), "features")
    store, _, name = features.rpartition("/")
    if not features or features == own or name != "features" or not store:
        return run
    try:
        if storage.exists(storage.join(store, "cache"), storage_options=storage_options):
            return store
    except Exception:  # storage back-ends raise many kinds; the run's own folder is a store too
        pass
    print_warnings([f"no feature cache beside {features}, whose features the run under {run} evaluated: features are extracted into {run}"])
    return run


def _take_run_settings(config: pipeline.RunConfig, record: dict[str, Any], args: argparse.Namespace) -> None:
    """Fill what neither the flags nor a config file set from the evaluated run, so the model is the evaluated one."""
    settings = record.get("settings", {})
    for name in RUN_SETTINGS:
        # A config file that sets other things (method parameters, say) leaves these to the run.
        if getattr(args, name, None) is None and name not in config.from_file and settings.get(name) is not None:
            setattr(config, name, settings[name])
    # Parameter by parameter: a config file's setting of one leaves the run's others.
    evaluated = settings.get("method_params") or {}
    config.method_params = {name: {**evaluated.get(name, {}), **config.method_params.get(name, {})} for name in {*evaluated, *config.method_params}}
    if not config.corpora:
        config.corpora = [pipeline.CorpusSpec(**spec) for spec in settings.get("corpora", [])]


def command_train(args: argparse.Namespace, config_from: Any) -> int:
    from crossemo import bundle, orchestration

    started = time.perf_counter()
    setup = train_setup(args, config_from)
    config = setup.config
    if setup.adapt_to is not None:
        print_warnings(setup.adapt_to.warnings)
        if len(setup.adapt_to.missing):
            first = setup.adapt_to.missing.iloc[0]
            print_warnings([f"{len(setup.adapt_to.missing)} file(s) --adapt-to lists cannot be read and are left out (for example {first['uri']}: {first['reason']})"])
    options = config.fs_options
    store = featurestore.FeatureStore(config.out, options)
    settings = config.analysis_settings()
    extraction = orchestration.extract_features(
        setup.prepared.manifests, store, feature_set=config.feature_set, settings=settings, address=config.address, write_store=False, progress=config.progress,
    )
    print(f"features ({extraction.feature_set_id}): {extraction.extracted} extracted, {extraction.reused} reused from the cache in {store.out}")
    # As run and features say them: a file left out, or a speaker spelt two ways, changes what the model learns from.
    print_unused(extraction.rejected, where="the model learns from the others")
    print_warnings(pipeline.manifest_warnings(setup.prepared.manifests) + extraction.warnings)
    datasets = pipeline.datasets_from(extraction.features)
    target = datasets[setup.target]
    source = protocol.Dataset.union([datasets[name] for name in setup.sources]) if len(setup.sources) > 1 else (datasets[setup.sources[0]] if setup.sources else None)
    # Again on what extraction kept: a speaker whose recordings were all rejected no longer counts.
    protocol.check_speakers(setup.choice.method, setup.estimator, source, target)
    unlabelled = _unlabelled_features(setup.adapt_to, store, config, settings) if setup.adapt_to else None
    params = protocol.method_params(setup.choice.method, config.method_params)
    model = training.fit(setup.choice, source=source, target=target, seed=config.seed, params=params, unlabelled=unlabelled)
    extractor = FeatureExtractor(config.feature_set, storage_options=options)
    manifests = {m.corpus: m for m in setup.prepared.manifests}
    metadata = {
        "crossemo_version": crossemo.__version__,
        "code_version": pipeline.code_version(),
        "trained": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "feature_set": config.feature_set,
        "feature_set_id": extractor.feature_set_id,
        "feature_names": list(extractor.names),
        "decode": settings.key(),
        "classes": [str(c) for c in model.classes_],
        "method": setup.choice.method,
        "params": {k: v for k, v in model.get_params(deep=False).items() if k not in UNSET_PARAMS},
        "seed": config.seed,
        "choice": {"column": setup.choice.column, "with_source": setup.choice.with_source, "reason": setup.choice.reason},
        "normalises_test_speakers": prediction.normalises_test_speakers(model),
        "training": {
            "target": setup.target,
            "sources": setup.sources,
            "corpora": {
                name: {**pipeline.corpus_fingerprint(manifests[name]), "utterances_used": int(len(datasets[name].y))}
                for name in [*setup.sources, setup.target]
            },
            "rows": int(len(target.y) + (len(protocol.usable_source(source, target).y) if source is not None else 0)),
            "unlabelled_rows": int(len(unlabelled[0])) if unlabelled is not None else 0,
        },
        "evaluation": _evaluation_record(setup, args),
    }
    model_id = bundle.save_bundle(model, setup.model_uri, metadata=metadata, storage_options=options)
    print(f"\nmodel {model_id}: {setup.choice.method} ({setup.choice.reason}) on {' + '.join(setup.sources) or 'no source'} and all {len(set(target.speakers))} speaker(s) of {setup.target} "
          f"({metadata['training']['rows']} labelled utterances{f', {len(unlabelled[0])} unlabelled' if unlabelled is not None else ''}); classes {', '.join(metadata['classes'])}")
    if setup.evaluation:
        ev = setup.evaluation
        print(f"evaluated under {args.from_run}: UAR {ev['uar']:.1f} % ± {ev['uar_sd']:.1f}, accuracy {ev['accuracy']:.1f} % ± {ev['accuracy_sd']:.1f} over {ev['folds']} folds")
    print(f"written to {setup.model_uri} in {time.perf_counter() - started:.1f} s; label audio with: crossemo predict --model {setup.model_uri} --audio AUDIO --out OUT")
    return 0


def _evaluation_record(setup: TrainSetup, args: argparse.Namespace) -> dict[str, Any] | None:
    if setup.evaluation is None:
        return None
    return {"run": pipeline.absolute(args.from_run), "metric_unit": "percent", "spread": "sample standard deviation over folds", **setup.evaluation}


def _unlabelled_features(listing: inputs.AudioFiles, store: featurestore.FeatureStore, config: pipeline.RunConfig, settings: audio.AnalysisSettings) -> tuple[np.ndarray, np.ndarray]:
    """Features (m × d) and speaker ids of the ``--adapt-to`` audio, through the feature cache."""
    from crossemo import orchestration

    extractor = FeatureExtractor(config.feature_set, storage_options=config.fs_options)
    generation = featurestore.CacheGeneration.of(extractor, settings)
    extraction = orchestration.extract_files(
        listing.files, store, extractor=extractor, settings=settings, generation=generation, read_features=True, address=config.address, progress=config.progress,
    )
    keys = extraction.keys.drop_duplicates("uri").set_index("uri")["sha256"]
    shas = listing.files["uri"].map(keys).fillna("")
    facts, values, rejections = extraction.cache.contents(set(shas) - {""})
    usable = shas.isin(facts.index)
    if not usable.any():
        raise pipeline.ConfigError("--adapt-to: no file gave features (see the reasons with `crossemo predict`)")
    if not usable.all():
        # Read, but not usable as audio (empty, not audio, too short, silent): counted as the unreadable ones are.
        reasons = rejections.drop_duplicates("sha256").set_index("sha256")["reason"]
        first = shas[~usable].index[0]
        why = reasons.get(shas[first], "no features")
        print_warnings([f"{(~usable).sum()} file(s) --adapt-to lists gave no features and are left out (for example {listing.files.loc[first, 'uri']}: {why})"])
    X = values[facts.index.get_indexer(shas[usable])].astype(np.float64)
    return X, ("adapt/" + listing.files.loc[usable, "speaker"].astype(str)).to_numpy()


@dataclass
class PredictSetup:
    """A checked ``predict`` request, before Ray."""

    loaded: Any
    extractor: FeatureExtractor
    settings: audio.AnalysisSettings
    listing: inputs.AudioFiles
    segmentation: prediction.Segmentation | None
    storage_options: dict | None


def predict_setup(args: argparse.Namespace) -> PredictSetup:
    """Check the segmentation, load and check the bundle, list the audio and probe the output, before Ray.

    Raises:
        bundle.BundleError, inputs.InputError, storage.StorageError, pipeline.ConfigError: one line naming the cause.
    """
    from crossemo import bundle

    for flag, value in (("--model", args.model), ("--out", args.out), ("--store", args.store)):
        if value is not None and not value.strip():
            raise pipeline.ConfigError(f"{flag} is empty; give a folder or s3:// prefix")
    segmentation = None
    if args.segment is not None:
        longest = {} if args.max_length is None else {"max_length": args.max_length}
        segmentation = prediction.Segmentation(args.segment, hop=args.hop, **longest)
        try:
            segmentation.rule()
        except ValueError as error:
            raise pipeline.ConfigError(f"--segment: {error}") from None
    elif args.hop is not None:
        raise pipeline.ConfigError("--hop needs --segment SECONDS")
    if args.max_length is not None and args.segment != "speech":
        raise pipeline.ConfigError("--max-length applies to --segment speech only")
    pipeline.check_address(args.address)
    options = pipeline.parse_storage_options(args.storage_option) or None
    loaded = bundle.load_bundle(args.model, storage_options=options)
    extractor, settings = _bundle_features(loaded.metadata, args.model, options)
    if segmentation is not None:
        _check_windows_usable(segmentation, settings)
    classes = [str(label) for label in loaded.method.classes_]
    if "classes" in loaded.metadata and [str(label) for label in loaded.metadata["classes"]] != classes:
        raise bundle.BundleError(f"{args.model}/{bundle.MODEL_FILE} names the classes {loaded.metadata['classes']}, its fitted method has {classes}; was it edited?")
    per_speaker = prediction.normalises_test_speakers(loaded.method)
    listing = inputs.list_inputs(
        args.audio, speaker_pattern=args.speaker_pattern, storage_options=options, reserved_columns=prediction.output_columns(classes), speakers_matter=per_speaker,
    )
    if segmentation is None and per_speaker:
        listing.warnings += _lone_file_warnings(listing.files, loaded.metadata["bundle"]["method"])
    # A bundle's folder holds the bundle alone: it is copied, digested and loaded by workers as a whole.
    for flag, value in (("--out", args.out), ("--store", args.store)):
        if value and storage.is_within(value, args.model, storage_options=options):
            raise pipeline.ConfigError(f"{flag} {value} lies inside the model bundle {args.model}; write it elsewhere")
    # Parts written there would be read back as feature tables or cache files.
    for kept in ("features", "cache") if args.store else ():
        if storage.is_within(args.out, storage.join(args.store, kept), storage_options=options):
            raise pipeline.ConfigError(f"--out {args.out} lies inside the feature store's {kept} folder ({args.store}); write the labels elsewhere")
    inside = featurestore.store_folder_holding(args.out, storage_options=options)
    if inside is not None:
        raise pipeline.ConfigError(f"--out {args.out} lies inside the {inside[1]} folder of the feature store {inside[0]}; write the labels elsewhere")
    storage.check_writable(args.out, storage_options=options)
    if args.store:
        storage.check_writable(args.store, storage_options=options)
    return PredictSetup(loaded, extractor, settings, listing, segmentation, options)


def _bundle_features(metadata: dict[str, Any], uri: str, options: dict | None) -> tuple[FeatureExtractor, audio.AnalysisSettings]:
    """The feature extractor and decode rules a bundle's ``model.json`` names, checked against this crossemo.

    Raises:
        bundle.BundleError: a missing or unusable entry, or a feature set or decode rules this crossemo computes otherwise.
    """
    from crossemo import bundle

    # A bundle saved through the API may lack these entries or hold unusable
    # ones (train always writes them, sealed: see bundle.SEALED_ENTRIES).
    try:
        feature_set, feature_set_id, names, decode = (metadata[key] for key in bundle.FEATURE_ENTRIES)
        decode = dict(decode)
    except KeyError as error:
        raise bundle.BundleError(f"{uri}/{bundle.MODEL_FILE} lacks {error.args[0]!r}, which predict needs; was it written by `crossemo train`?") from None
    except (TypeError, ValueError):
        raise bundle.BundleError(f"{uri}/{bundle.MODEL_FILE}: its decode entry is not an object of decode rules") from None
    try:
        extractor = FeatureExtractor(feature_set, storage_options=options)
    except (ValueError, OSError) as error:
        raise bundle.BundleError(f"bundle {uri}: its feature set {feature_set!r} cannot be built here: {error}") from None
    if extractor.feature_set_id != feature_set_id:
        raise bundle.BundleError(f"bundle {uri}: its feature set {feature_set_id} gives other features here ({extractor.feature_set_id}); retrain it with this crossemo")
    if list(extractor.names) != list(names):
        raise bundle.BundleError(f"bundle {uri}: the feature names in {bundle.MODEL_FILE} are not those of {feature_set_id} here, in order; retrain it with this crossemo")
    if decode.get("rules") != audio.DECODE_RULES_VERSION:
        raise bundle.BundleError(f"bundle {uri}: made with decode rules version {decode.get('rules')}, this crossemo has {audio.DECODE_RULES_VERSION}; retrain it")
    try:
        settings = audio.AnalysisSettings(**{name: decode[name] for name in ("analysis_rate", "channel", "min_duration")})
    except KeyError as error:
        raise bundle.BundleError(f"{uri}/{bundle.MODEL_FILE}: its decode rules lack {error.args[0]!r}") from None
    except (TypeError, ValueError) as error:
        raise bundle.BundleError(f"{uri}/{bundle.MODEL_FILE}: its decode rules are unusable: {error}") from None
    return extractor, settings


LONE_SPEAKERS_NAMED = 5
"""How many single-file speakers the warning names: enough to find them, short enough for one line."""


def _lone_file_warnings(files: pd.DataFrame, method: str) -> list[str]:
    """A warning when a speaker (or batch) has one file, for a method that normalises each speaker by their own recordings."""
    counts = files["speaker"].value_counts()
    alone = sorted(str(speaker) for speaker in counts.index[counts == 1])
    if not alone:
        return []
    named = ", ".join(alone[:LONE_SPEAKERS_NAMED]) + (f" and {len(alone) - LONE_SPEAKERS_NAMED} more" if len(alone) > LONE_SPEAKERS_NAMED else "")
    # Normalising one recording by itself leaves nothing of it: every such file gets the same label.
    return [(f"{len(alone)} speaker(s) or batch(es) have a single file ({named}): {method} normalises each speaker by their own recordings, "
             "so it gives such a file the same label whatever it holds; give several recordings of each speaker")]


def _check_windows_usable(segmentation: prediction.Segmentation, settings: audio.AnalysisSettings) -> None:
    """Refuse windows that could never be labelled: every one would be shorter than the shortest usable recording."""
    longest = segmentation.max_length if segmentation.mode == "speech" else segmentation.mode
    if longest < settings.min_duration:
        flag = "--max-length" if segmentation.mode == "speech" else "--segment"
        raise pipeline.ConfigError(f"{flag} {longest:g} s is shorter than the shortest recording the model labels ({settings.min_duration:g} s)")


def label(args: argparse.Namespace, setup: PredictSetup) -> Any:
    """Label the listed audio as :func:`predict_setup` checked it (Ray starts here if there is work)."""
    from crossemo import orchestration

    store = featurestore.FeatureStore(args.store or args.out, setup.storage_options)
    return orchestration.label_files(
        setup.listing, setup.loaded, args.model, args.out, store=store, extractor=setup.extractor, settings=setup.settings,
        segmentation=setup.segmentation, address=args.address, storage_options=setup.storage_options, progress=args.progress,
    )


def command_predict(args: argparse.Namespace) -> int:
    setup = predict_setup(args)
    print_warnings(setup.listing.warnings)
    summary = label(args, setup)
    print_labelling(summary, args.out, setup.loaded.model_id)
    print_warnings(labelling_warnings(summary, setup))
    return labelling_status(summary, args.out)


def labelling_warnings(summary: Any, setup: PredictSetup) -> list[str]:
    """What a user should know about a run's labels: earlier ones of another model or rule in the folder, files recorded below the model's analysis rate."""
    warnings = [
        f"{summary.earlier_foreign} earlier label(s) in the folder come from another model or segmentation rule than this run's: the folder mixes them "
        "(model_id tells models apart; rows labelled from windows count them in windows); give a new --out to keep one model and rule per output"
    ] if summary.earlier_foreign else []
    if not summary.below_rate:
        return warnings
    rates = ", ".join(f"{rate} Hz: {n}" for rate, n in summary.below_rate.items())
    return [*warnings, (
        f"{sum(summary.below_rate.values())} labelled file(s) are recorded below the model's analysis rate of {setup.settings.analysis_rate} Hz "
        f"({rates}): they were upsampled, so their upper band is empty"
    )]


def labelling_status(summary: Any, out: str) -> int:
    """0 when a file was labelled; else 1, with one line on stderr naming the commonest reason (a script must not take no labels for success)."""
    if summary.labelled or not summary.files:
        return 0
    rejected = storage.join(out, "predictions", prediction.REJECTED_FILE)
    # This run's files' reasons: the file of rejections also holds earlier runs'.
    commonest = f"; the commonest reason ({next(iter(summary.reasons.values()))} file(s)): {next(iter(summary.reasons))}" if summary.reasons else ""
    print(f"crossemo: error: none of the {summary.files} file(s) could be labelled{commonest}; every reason is in {rejected}", file=sys.stderr)
    return 1


def print_labelling(summary: Any, out: str, model_id: str) -> None:
    """The one-screen summary of a ``predict`` run."""
    folder = storage.join(out, "predictions")
    reused = f"; {summary.reused_shards} finished shard(s) reused" if summary.reused_shards else ""
    reused += f"; {summary.removed_parts} earlier part(s) replaced" if summary.removed_parts else ""
    reused += f"; the labels of {summary.kept_labels} file(s) of replaced parts this run was not given kept" if summary.kept_labels else ""
    reused += f"; the labels of {summary.dropped_labels} file(s) of replaced parts this run was not given dropped (another model or rule gave them)" if summary.dropped_labels else ""
    extracted = f", {summary.extracted} file(s) extracted" if summary.extracted is not None else ""
    print(f"\nmodel {model_id}: {summary.files} files, {summary.labelled} labelled, {summary.rejected} not usable, in {summary.wall_seconds:.1f} s "
          f"({summary.shards} shard(s) written{extracted}{reused})")
    if summary.emotions:
        total = sum(summary.emotions.values())
        shares = pd.Series(summary.emotions).sort_values(ascending=False)
        print("predicted: " + ", ".join(f"{emotion} {n / total:.0%} ({n})" for emotion, n in shares.items()))
    print(f"labels in {folder} (pandas.read_parquet reads the folder); files not used, with the reason, in {storage.join(folder, prediction.REJECTED_FILE)}")
    if summary.earlier_labels:
        print(f"the folder also holds {summary.earlier_labels} earlier label(s) of files this run was not given; the counts above are this run's files")
    if summary.windows:
        print(f"{summary.windows} windows labelled one by one in {storage.join(out, 'segments')}; a file's label is the mean of its windows' probabilities")
