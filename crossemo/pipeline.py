"""One run of crossemo, end to end: corpora → features → protocol → results → tables.

:class:`RunConfig` holds every setting (from flags, a TOML file, or both);
:func:`prepare` (with :func:`check_settings`) checks everything that can be
checked before Ray starts, so bad input fails in a second with one line and
writes nothing; :func:`run` does the work and records it under
``<out>/runs/<run id>/``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import time
import tomllib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

import crossemo
from crossemo import audio, corpora, featurestore, methods, protocol, storage
from crossemo.features import FeatureExtractor, resolve_feature_set
from crossemo.report import tables, verdict


class ConfigError(ValueError):
    """A setting is wrong; the message names it."""


class EvaluationNotRun(ConfigError):
    """Extraction finished, but what it kept cannot be evaluated as asked (the message says why).

    Attributes:
        record: the run, recorded as features only, with the reason in ``stopped``.
        extraction: what the extraction did, for its summary.
    """

    def __init__(self, message: str, *, record: "RunRecord", extraction: Any):
        super().__init__(message)
        self.record = record
        self.extraction = extraction


SEED_LIMIT = 2**32
"""Seeds run from 0 to ``SEED_LIMIT - 1``: numpy and scikit-learn refuse others, but only inside a task."""

SETTING_TYPES: dict[str, tuple[type, ...]] = {
    "out": (str,), "corpora": (dict,), "feature_set": (str,), "pairs": (str, list), "methods": (str, list),
    "seed": (int,), "seeds": (int,), "address": (str,), "storage_options": (dict,), "method_params": (dict,),
    "analysis_rate": (int,), "channel": (str, int),
}
"""The settings a config file may hold, and the TOML types each accepts (lists hold strings)."""

MAX_SEEDS = 100
"""More seeds than this multiply the grid's cost for no visible gain in the spread."""

RUN_PARAMS = {"random_state": "every method takes the run's seed", "source_model": "the run trains it on the source"}
"""Method parameters the run passes itself (see :func:`crossemo.protocol.run_task`); set twice, a task would fail."""

TYPE_NAMES = {str: "a string", list: "a list of strings", int: "a whole number", dict: "a table"}

@dataclass
class CorpusSpec:
    """A corpus of the run: a recipe and where its audio is.

    Attributes:
        recipe: recipe name (see ``crossemo corpora``).
        uri: the corpus root, or for ``manifest`` the CSV/Parquet file.
        name: the corpus name in outputs (the recipe name, or the manifest's file stem).
        options: recipe options, such as ``merge_excited`` for IEMOCAP.
    """

    recipe: str
    uri: str
    name: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            self.name = Path(self.uri.rstrip("/")).stem if self.recipe == "manifest" else self.recipe

    @classmethod
    def parse(cls, text: str) -> CorpusSpec:
        """Parse ``NAME=URI`` from the command line."""
        recipe, sep, uri = text.partition("=")
        if not sep or not recipe or not uri:
            raise ConfigError(f"--corpus {text!r} is not NAME=URI (for example emovo=/data/EMOVO)")
        return cls(recipe=recipe.strip(), uri=uri.strip())


@dataclass
class RunConfig:
    """Every setting of a run."""

    out: str = ""
    corpora: list[CorpusSpec] = field(default_factory=list)
    feature_set: str = "is10"
    analysis_rate: int = audio.DEFAULT_ANALYSIS_RATE
    channel: audio.Channel = audio.DEFAULT_CHANNEL
    pairs: str = "all"
    methods: str = "all"
    seed: int = 0
    seeds: int = 1
    address: str | None = None
    storage_options: dict[str, Any] = field(default_factory=dict)
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    progress: bool = True
    from_file: frozenset[str] = frozenset()
    """The settings a config file set (``train --from-run`` takes the others from the run)."""

    @classmethod
    def from_toml(cls, path: str) -> RunConfig:
        """Read a config file; see ``configs/`` for documented examples.

        Raises:
            ConfigError: the file is missing, is not TOML, has unknown keys, or
                has a setting or corpus entry of the wrong kind.
        """
        try:
            with open(path, "rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except IsADirectoryError:
            raise ConfigError(f"config file {path} is a folder, not a TOML file") from None
        except UnicodeDecodeError as error:  # TOML is UTF-8 by definition; tomllib lets the decoder's error through
            raise ConfigError(f"config file {path} is not UTF-8 text (byte 0x{error.object[error.start]:02x} at position {error.start}); save it as UTF-8") from None
        except OSError as error:
            raise ConfigError(f"cannot read config file {path}: {storage.describe_error(error)}") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
        unknown = sorted(set(data) - set(SETTING_TYPES))
        if unknown:
            raise ConfigError(f"config file {path} has unknown setting {unknown[0]!r}; known: {', '.join(sorted(SETTING_TYPES))}")
        for key, value in data.items():
            types = SETTING_TYPES[key]
            if not isinstance(value, types) or (isinstance(value, list) and not all(isinstance(item, str) for item in value)):
                raise ConfigError(f"config file {path}: {key} must be {' or '.join(TYPE_NAMES[t] for t in types)}, not {value!r}")
        base = Path(path).resolve().parent
        specs = []
        for name, value in data.pop("corpora", {}).items():
            if not (isinstance(value, str) or (isinstance(value, dict) and isinstance(value.get("uri"), str))):
                raise ConfigError(f"config file {path}: corpus {name!r} must be a URI or a table with a uri, such as {{ recipe = \"manifest\", uri = \"mine.csv\" }}")
            if isinstance(value, dict) and "corpus" in value:
                # prepare() passes the corpus name to the manifest recipe as its `corpus` option.
                raise ConfigError(f"config file {path}: corpus {name!r} is named with name = …, not corpus = …")
            entry = {"recipe": name, "uri": value} if isinstance(value, str) else {"recipe": name, **value}
            spec = CorpusSpec(recipe=entry.pop("recipe"), uri=_relative_to(base, entry.pop("uri")), name=entry.pop("name", name if not isinstance(value, str) else ""), options=entry)
            specs.append(spec)
        if "out" in data:
            data["out"] = _relative_to(base, data["out"])
        if isinstance(data.get("channel"), str):
            data["channel"] = channel_rule(data["channel"])  # "1" as --channel 1
        for key, form in (("pairs", '"all" or ["SOURCE:TARGET", …]'), ("methods", '"all" or ["m1", "m2", …]')):
            if isinstance(data.get(key), list):
                data[key] = ",".join(data[key])
            # Caught here, the error names the file's key, not the flag the setting would otherwise be checked as.
            if key in data and not data[key].replace(",", "").strip():
                raise ConfigError(f"config file {path}: {key} is empty; give {form}")
        return cls(corpora=specs, from_file=frozenset(data) | ({"corpora"} if specs else set()), **data)

    def analysis_settings(self) -> audio.AnalysisSettings:
        """The decode rules of this run.

        Raises:
            ConfigError: an analysis rate or channel rule that cannot be used.
        """
        try:
            return audio.AnalysisSettings(analysis_rate=self.analysis_rate, channel=self.channel)
        except ValueError as error:
            raise ConfigError(str(error)) from None

    @property
    def fs_options(self) -> dict[str, Any] | None:
        """The storage options for fsspec, ``None`` when there are none."""
        return dict(self.storage_options) or None

    def describe(self) -> dict[str, Any]:
        """The settings as plain data, with storage credentials left out and local paths absolute.

        Absolute, because a record is read from other folders: ``train --from-run``
        takes its corpora from it wherever it is started.
        """
        settings = asdict(self)
        settings["storage_options"] = {k: ("***" if _is_secret(k) else v) for k, v in self.storage_options.items()}
        settings.pop("progress")
        settings.pop("from_file")
        for spec in settings["corpora"]:
            spec["uri"] = absolute(spec["uri"])
        settings["out"] = absolute(settings["out"]) if settings["out"] else settings["out"]
        return settings


def channel_rule(text: str) -> str | int:
    """A channel rule written as text (a flag, a config string): an index as an int, a name as it is."""
    try:
        return int(text)
    except ValueError:
        return text


def absolute(uri: str) -> str:
    """A local path as an absolute one (``~`` expanded, links kept); URIs unchanged."""
    return uri if "://" in uri else os.path.abspath(os.path.expanduser(uri))


def _relative_to(base: Path, uri: str) -> str:
    """Paths in a config file are relative to the file, URIs are kept."""
    if "://" in uri or Path(uri).is_absolute():
        return uri
    return str((base / uri).resolve())


def _is_secret(key: str) -> bool:
    return any(word in key.lower() for word in ("secret", "token", "password", "key"))


def parse_storage_options(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; ``true``/``false`` and numbers become their types."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--storage-option {item!r} is not key=value")
        options[key] = {"true": True, "false": False}.get(value.lower(), value)
    return options


@dataclass
class Prepared:
    """A validated run, before any Ray work."""

    config: RunConfig
    manifests: list[corpora.Manifest]
    feature_set_id: str


def check_settings(config: RunConfig) -> None:
    """Check the settings that need no corpus: output location, seed, Ray address, method parameters.

    Writes nothing: the output location is probed and the probe removed.

    Raises:
        ConfigError: a bad seed, Ray address, method parameter, analysis rate
            or channel rule, or no output.
        storage.StorageError: the output location cannot be written.
    """
    if not config.out:
        raise ConfigError("no output given (--out)")
    config.analysis_settings()
    if isinstance(config.seed, bool) or not isinstance(config.seed, int) or not 0 <= config.seed < SEED_LIMIT:
        raise ConfigError(f"seed must be a whole number from 0 to {SEED_LIMIT - 1}, not {config.seed!r}")
    if isinstance(config.seeds, bool) or not isinstance(config.seeds, int) or not 1 <= config.seeds <= MAX_SEEDS or config.seed + config.seeds > SEED_LIMIT:
        raise ConfigError(f"seeds must be a whole number from 1 to {MAX_SEEDS} (seed + seeds at most {SEED_LIMIT}), not {config.seeds!r}")
    check_address(config.address)
    for method, params in config.method_params.items():
        if not isinstance(params, dict):
            raise ConfigError(f"method_params.{method} must be a table of parameter = value, not {params!r}")
        taken = sorted(set(params) & set(RUN_PARAMS))
        if taken:
            raise ConfigError(f"method_params.{method}.{taken[0]} cannot be set: {RUN_PARAMS[taken[0]]}")
        try:
            methods.make_method(method, **params)
        except ValueError as error:
            raise ConfigError(f"method_params: {error}") from None
        try:
            protocol.dry_run(method, params)
        except Exception as error:  # any estimator's own check of a value; name it and stop
            detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ConfigError(f"method_params.{method}: {detail}") from None
    # Last: the only checks that touch storage.
    inside = featurestore.store_folder_holding(config.out, storage_options=config.fs_options)
    if inside is not None:
        # Its files would be read back as that store's feature tables, and that store's runs would delete them.
        raise ConfigError(f"output {config.out} lies inside the {inside[1]} folder of the feature store {inside[0]}; give a folder outside it")
    storage.check_writable(config.out, storage_options=config.fs_options)


def check_address(address: str | None) -> None:
    """:func:`crossemo.orchestration.check_address`, as bad input.

    Raises:
        ConfigError: a malformed address.
    """
    from crossemo import orchestration

    try:
        orchestration.check_address(address)
    except orchestration.ClusterError as error:
        raise ConfigError(str(error)) from None


NAME_SEPARATORS = "+:,/"
"""Characters a corpus name cannot hold: ``--pairs`` pools sources with ``+`` and separates with ``:`` and ``,``; ``/`` joins corpus and speaker."""


def _check_corpus_name(spec: CorpusSpec) -> None:
    """Refuse a corpus name that pairs, speaker ids or the feature store's file names would split or mistake."""
    used = [c for c in NAME_SEPARATORS if c in spec.name]
    if used:
        why = f"holds {used[0]!r}, which --pairs and outputs use to separate names"
    elif not spec.name.strip() or spec.name != spec.name.strip():
        why = "is empty or begins or ends with a space, which --pairs cannot name"
    elif spec.name.startswith("_"):
        why = "begins with '_', as the feature store's own tables (features/_manifest.parquet …) do"
    else:
        return
    from_file = spec.recipe == "manifest" and Path(spec.uri.rstrip("/")).stem == spec.name
    origin = f" (from the file name of {spec.uri})" if from_file else ""
    raise ConfigError(f"corpus name {spec.name!r}{origin} {why}; rename {'the file' if from_file else 'it'}, or give another name with name = … in a config file's [corpora] entry")


def prepare(config: RunConfig, *, need_pairs: bool = True) -> Prepared:
    """Check every setting and list every corpus, before Ray starts.

    Raises:
        ConfigError: a bad setting (unknown recipe, corpus given twice, unknown
            method or feature set, bad pair …; see also :func:`check_settings`).
        storage.StorageError: the output location cannot be written.
        corpora.CorpusError: a corpus cannot be read as its recipe expects.
    """
    check_settings(config)
    if not config.corpora:
        raise ConfigError("no corpus given (--corpus NAME=URI)")
    for spec in config.corpora:
        _check_corpus_name(spec)
    names = [spec.name for spec in config.corpora]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"corpus {twice[0]!r} is given twice")
    uris = [spec.uri.rstrip("/") for spec in config.corpora]
    same = sorted({u for u in uris if uris.count(u) > 1})
    if same:
        raise ConfigError(f"the same corpus location {same[0]} is given twice")
    try:
        feature_set_id = FeatureExtractor(config.feature_set, storage_options=config.fs_options).feature_set_id
    except ValueError as error:
        raise ConfigError(str(error)) from None
    try:
        method_names = protocol.parse_methods(config.methods)
        pairs = protocol.parse_pairs(config.pairs, names) if need_pairs else []
    except protocol.ProtocolError as error:
        raise ConfigError(str(error)) from None
    options = config.fs_options
    manifests = [corpora.prepare(s.recipe, s.uri, storage_options=options, **({"corpus": s.name} if s.recipe == "manifest" else {}), **s.options) for s in config.corpora]
    labels = {m.corpus: protocol.Labels.from_manifest(m.corpus, m.utterances) for m in manifests}
    try:
        pooled = {source: labels[source] if source in labels else protocol.Labels.union([labels[c] for c in protocol.source_corpora(source)]) for source, _ in pairs}
        for source, target in pairs:
            try:
                protocol.check_pair(pooled[source], labels[target])
            except protocol.ProtocolError as error:
                # A speaker or class too few is often files that were left out (wrong relative paths): say so.
                involved = {*protocol.source_corpora(source), target}
                raise ConfigError(f"{error}{skipped_note([m for m in manifests if m.corpus in involved])}") from None
        protocol.check_scenario_3(planned_methods(config, method_names), [(pooled[source], labels[target]) for source, target in pairs])
    except protocol.ProtocolError as error:
        raise ConfigError(str(error)) from None
    return Prepared(config=config, manifests=manifests, feature_set_id=feature_set_id)


def skipped_note(manifests: list[corpora.Manifest]) -> str:
    """``"; of the N files listed for C, K were left out, J as REASON (for example URI)"`` per corpus with skipped files, or ``""``."""
    notes = []
    for manifest in manifests:
        if len(manifest.skipped):
            reasons = manifest.skipped["reason"].value_counts()
            example = manifest.skipped.loc[manifest.skipped["reason"] == reasons.index[0], "uri"].iloc[0]
            listed = len(manifest.skipped) + len(manifest.utterances)
            notes.append(f"; of the {listed} files listed for {manifest.corpus}, {len(manifest.skipped)} were left out, {reasons.iloc[0]} as {reasons.index[0]} (for example {example})")
    return "".join(notes)


@dataclass
class RunRecord:
    """What a run did, as written to ``<out>/runs/<run id>/run.json``."""

    run_id: str
    started: str
    settings: dict[str, Any]
    code_version: str
    corpora: dict[str, dict[str, Any]] = field(default_factory=dict)
    feature_set_id: str = ""
    cache_generation: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    pairs: list[list[str]] = field(default_factory=list)
    result_uris: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stopped: str = ""
    """Why the evaluation did not run after extraction, or why the run failed or was interrupted
    (``"failed: <error>"``, ``"interrupted by SIGTERM"``); empty when it ran to its end."""


def code_version() -> str:
    """The package version, with the git commit when run from a checkout, and ``.dirty`` when the package's files differ from it.

    A run of edited code recorded under the commit's name alone claimed results that commit does not give.
    """
    package = Path(__file__).parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=package, capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    try:
        edited = bool(commit) and subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "."], cwd=package, capture_output=True, timeout=5).returncode == 1
    except (OSError, subprocess.SubprocessError):  # a slow checkout: the commit is still known
        edited = False
    return f"{crossemo.__version__}+{commit}{'.dirty' if edited else ''}" if commit else crossemo.__version__


def corpus_fingerprint(manifest: corpora.Manifest) -> dict[str, Any]:
    """Digests of a corpus's file list and labels, to tell whether it changed between runs.

    ``digest`` covers the files' URIs too; ``content_digest`` only each file's
    listing fingerprint (size and mtime or ETag) with its speaker and emotion,
    so the same corpus reached by another path (a relative root read from
    another folder) keeps it, and a relabelled or added file changes it.
    """
    frame = manifest.utterances[["uri", "fingerprint", "speaker", "emotion"]]
    digest = hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()[:16]
    content = frame.drop(columns="uri").sort_values(["fingerprint", "speaker", "emotion"])
    content_digest = hashlib.sha256(content.to_csv(index=False).encode()).hexdigest()[:16]
    return {
        "root": absolute(manifest.root), "utterances": len(frame), "skipped": len(manifest.skipped), "digest": digest, "content_digest": content_digest,
    }


def new_record(config: RunConfig, *, manifests: list[corpora.Manifest], feature_set_id: str) -> RunRecord:
    """A fresh run record; run ids sort by start time."""
    now = dt.datetime.now(dt.timezone.utc)
    return RunRecord(
        run_id=f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}",
        started=now.isoformat(timespec="seconds"),
        settings=config.describe(),
        code_version=code_version(),
        corpora={m.corpus: corpus_fingerprint(m) for m in manifests},
        feature_set_id=feature_set_id,
    )


DECODE_SETTINGS = ("analysis_rate", "channel")
"""The settings that decide how audio becomes signals (:class:`crossemo.audio.AnalysisSettings`)."""


def record_feature_store(record: RunRecord, generation: dict[str, Any], *, storage_options: storage.StorageOptions | None = None) -> None:
    """Record the feature set and decode rules an evaluated feature store was made with.

    ``crossemo evaluate`` decodes no audio, so its own feature set and decode
    settings (the defaults, or a config file's) say nothing about the
    features: the record takes the store's cache generation, its analysis
    rate and channel rule, ``None`` for a store that does not say (written
    before it was kept), and its feature set wherever the setting names
    another (a custom set recorded by its id, ``config-…``); a setting that
    cannot be resolved here (a config file out of reach) is kept as it is.
    """
    record.cache_generation = dict(generation)
    decode = generation.get("decode", {})
    for name in DECODE_SETTINGS:
        record.settings[name] = decode.get(name)
    stored = generation.get("feature_set")
    setting = feature_set_id_of(record.settings.get("feature_set"), storage_options=storage_options)
    if stored and setting is not None and setting != stored:
        record.settings["feature_set"] = stored


def feature_set_id_of(spec: Any, *, storage_options: storage.StorageOptions | None = None) -> str | None:
    """The id of a feature set setting (``IS10`` and ``is10`` are one set); ``None`` when it cannot be resolved here."""
    try:
        return resolve_feature_set(str(spec), storage_options=storage_options).id
    except Exception:  # a config file out of reach (moved, credentials, network): the setting is kept as written
        return None


def manifest_warnings(manifests: list[corpora.Manifest]) -> list[str]:
    """Every manifest's warnings (blank rows, speaker ids spelt two ways …), each led by its corpus."""
    return [f"{m.corpus}: {w}" for m in manifests for w in m.warnings]


def write_record(record: RunRecord, out: str, *, storage_options: dict | None) -> str:
    uri = storage.join(out, "runs", record.run_id, "run.json")
    storage.write_bytes(json.dumps(asdict(record), indent=2, default=str).encode(), uri, storage_options=storage_options)
    return uri


def latest_record(out: str, *, storage_options: dict | None) -> dict[str, Any]:
    """The newest run record with results under ``out``.

    Raises:
        storage.StorageError: no run with results was recorded there.
    """
    for uri in sorted(storage.list_files(storage.join(out, "runs"), suffix="run.json", storage_options=storage_options), reverse=True):
        record = read_record(uri, storage_options=storage_options)
        if record.get("result_uris"):
            return record
    raise storage.StorageError(f"no run with results under {out}; run `crossemo run` or `crossemo evaluate` first")


def read_record(uri: str, *, storage_options: dict | None) -> dict[str, Any]:
    """One ``run.json``.

    Raises:
        storage.StorageError: it is not a JSON object (damaged, or not crossemo's).
    """
    fs, path = storage.filesystem(uri, storage_options=storage_options)
    refused = f"run record {uri} is not a crossemo run record"
    remedy = "move its folder out of runs/ to go on"
    try:
        record = json.loads(fs.cat_file(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise storage.StorageError(f"{refused} ({error}); {remedy}") from None
    if not isinstance(record, dict) or "run_id" not in record:
        raise storage.StorageError(f"{refused}; {remedy}")
    return record


def planned_methods(config: RunConfig, method_names: list[str]) -> dict[str, Any]:
    """The run's methods, unfitted, with the parameters the config gives them (raises ``ValueError`` for a bad parameter)."""
    return {name: methods.make_method(name, **config.method_params.get(name, {})) for name in method_names}


def datasets_from(features: dict[str, pd.DataFrame]) -> dict[str, protocol.Dataset]:
    """Arrays per corpus; a corpus with no feature rows is an error."""
    empty = [name for name, frame in features.items() if frame.empty]
    if empty:
        raise ConfigError(f"corpus {empty[0]} has no feature rows (see <out>/features/_rejected.parquet)")
    return {name: protocol.Dataset.from_frame(frame) for name, frame in features.items()}


def plan_evaluation(
    datasets: dict[str, protocol.Dataset], config: RunConfig, *, features_uri: str | None = None,
) -> tuple[dict[str, protocol.Dataset], list[tuple[str, str]], list[protocol.Task], list[str]]:
    """Datasets (with every multi-source pair's pooled source), pairs, tasks and warnings.

    Args:
        datasets: the corpora's features, as extraction kept them.
        config: the run's settings.
        features_uri: the feature store they come from, which an error points to for the files it left out.

    Raises:
        ConfigError: pairs or methods that cannot run.
    """
    try:
        pairs = protocol.parse_pairs(config.pairs, sorted(datasets))
        method_names = protocol.parse_methods(config.methods)
    except protocol.ProtocolError as error:  # the settings themselves: the data has no part in it
        raise ConfigError(str(error)) from None
    try:
        datasets = protocol.with_sources(datasets, pairs)
        warnings = [w for s, t in pairs for w in protocol.check_pair(datasets[s], datasets[t])]
        protocol.check_scenario_3(planned_methods(config, method_names), [(datasets[s], datasets[t]) for s, t in pairs])
    except protocol.ProtocolError as error:
        # Extraction may have rejected every recording of a speaker or class.
        where = f" (the files left out are listed in {storage.join(features_uri, '_rejected.parquet')})" if features_uri else ""
        raise ConfigError(f"{error}{where}") from None
    tasks = protocol.plan(datasets, pairs, method_names, seed=config.seed, seeds=config.seeds, overrides=config.method_params)
    return datasets, pairs, tasks, warnings


def result_files(record: dict[str, Any], out: str) -> list[str]:
    """A recorded run's result files, found under ``out`` as it is reached now.

    A record names them as they were written, below the run's own output
    folder; read from elsewhere (another working folder, a copied or
    re-mounted output) that folder is ``out``. A file written elsewhere is
    kept as named.
    """
    written = str(record.get("settings", {}).get("out") or "").rstrip("/")
    files = []
    for uri in record["result_uris"]:
        before, found, tail = uri.partition(f"{written}/results/") if written else ("", "", "")
        files.append(storage.join(out, "results", tail) if found and not before else uri)
    return files


def read_results(result_uris: list[str], *, storage_options: dict | None) -> pd.DataFrame:
    """The per-utterance results of the given task files.

    Raises:
        storage.StorageError: a file is missing or is not readable Parquet; the message names it.
    """
    return pd.concat([_read_result(uri, storage_options=storage_options) for uri in result_uris], ignore_index=True)


def _read_result(uri: str, *, storage_options: dict | None) -> pd.DataFrame:
    again = "running the evaluation again into the same --out recomputes it"
    try:
        return storage.read_frame(uri, storage_options=storage_options)
    except FileNotFoundError:
        raise storage.StorageError(f"result file {uri} is missing; {again}") from None
    except storage.PARQUET_READ_ERRORS as error:
        raise storage.unreadable(f"result file {uri}", error, remedy=f"remove it: {again}") from None


def evaluate_and_report(datasets: dict[str, protocol.Dataset], config: RunConfig, record: RunRecord, *, features_uri: str) -> dict[str, pd.DataFrame]:
    """Plan and run the protocol on Ray, then write the tables and the page."""
    from crossemo import orchestration

    options = config.fs_options
    datasets, pairs, tasks, warnings = plan_evaluation(datasets, config, features_uri=features_uri)
    record.warnings += warnings
    # Taken now, with the features the datasets hold: a run into the store while this one evaluates would replace them.
    keep_store_tables(features_uri, storage.join(config.out, "runs", record.run_id), storage_options=options)
    summary = orchestration.evaluate(datasets, tasks, storage.join(config.out, "results"), storage_options=options, address=config.address, progress=config.progress)
    record.pairs = [list(p) for p in pairs]
    record.result_uris = [absolute(uri) for uri in summary.result_uris]
    record.counts.update(tasks=summary.tasks, tasks_reused=summary.reused, fits=summary.fits)
    record.timings.update(evaluation_wall_seconds=summary.wall_seconds, evaluation_task_cpu_seconds=summary.task_cpu_seconds)
    record.settings["features"] = absolute(features_uri)
    return write_report(config.out, asdict(record), storage_options=options)


STORE_TABLES = ("manifest", "rejected", "duplicates")
"""The feature store's tables the page describes a run's corpora with (``features/_<name>.parquet``)."""


def keep_store_tables(features_uri: str, run_folder: str, *, storage_options: dict | None) -> None:
    """Copy the store's :data:`STORE_TABLES` into the run's record folder as they are now.

    The store's copies describe its latest run: a later run with other
    corpora into the same output replaces them, and ``crossemo report``
    would then show this run's results beside another run's corpora.
    """
    for name in STORE_TABLES:
        uri = storage.join(features_uri, f"_{name}.parquet")
        if storage.exists(uri, storage_options=storage_options):
            storage.write_bytes(storage.read_bytes(uri, storage_options=storage_options), storage.join(run_folder, f"{name}.parquet"), storage_options=storage_options)


def write_report(out: str, record: dict[str, Any], *, storage_options: dict | None) -> dict[str, pd.DataFrame]:
    """Tables (CSV, Markdown) and the HTML page under ``<out>/report`` from a run's results alone."""
    from crossemo.report import html

    results = read_results(result_files(record, out), storage_options=storage_options)
    pairs = [tuple(p) for p in record["pairs"]]
    report_uri = storage.join(out, "report")
    run_figures = tables.Figures.of(results)  # computed once for the tables, the verdict and the page
    result_tables = tables.write_tables(results, pairs, report_uri, run_figures=run_figures, storage_options=storage_options)
    result_tables["verdict"] = verdict.write_verdict(results, pairs, report_uri, run_figures=run_figures, storage_options=storage_options)
    features_uri = record["settings"].get("features") or storage.join(out, "features")
    side = {}
    for name in STORE_TABLES:
        # A run recorded before its own copies were kept has only the store's.
        candidates = (storage.join(out, "runs", record["run_id"], f"{name}.parquet"), storage.join(features_uri, f"_{name}.parquet"))
        found = next((uri for uri in candidates if storage.exists(uri, storage_options=storage_options)), None)
        side[name] = storage.read_frame(found, storage_options=storage_options) if found else None
    html.write_html_report(results, pairs, report_uri, manifest=side["manifest"], rejected=side["rejected"], duplicates=side["duplicates"], run=record, run_figures=run_figures, storage_options=storage_options)
    return result_tables


def run(config: RunConfig, *, evaluate: bool = True) -> tuple[RunRecord, Any, dict[str, pd.DataFrame]]:
    """Features, then (optionally) the evaluation and the tables, recorded as one run.

    Returns:
        ``(record, extraction summary, tables)``.
    """
    started = time.perf_counter()
    prepared = prepare(config, need_pairs=evaluate)
    record = new_record(config, manifests=prepared.manifests, feature_set_id=prepared.feature_set_id)
    record.warnings += manifest_warnings(prepared.manifests)
    with recorded_if_it_fails(record, config, started):
        return _extract_and_evaluate(config, record, evaluate=evaluate, started=started, manifests=prepared.manifests)


def _extract_and_evaluate(config: RunConfig, record: RunRecord, *, evaluate: bool, started: float, manifests: list) -> tuple[RunRecord, Any, dict[str, pd.DataFrame]]:
    """:func:`run` once its corpora are listed and its record begun."""
    from crossemo import orchestration

    options = config.fs_options
    store = featurestore.FeatureStore(config.out, options)
    extraction = orchestration.extract_features(
        manifests, store, feature_set=config.feature_set, settings=config.analysis_settings(), address=config.address, progress=config.progress,
    )
    record.cache_generation = extraction.generation.describe()
    record.warnings += extraction.warnings
    record.timings.update(
        extraction_wall_seconds=extraction.wall_seconds, extraction_startup_seconds=extraction.startup_seconds, extraction_task_cpu_seconds=extraction.task_cpu_seconds,
    )
    record.counts.update(
        utterances=sum(len(f) for f in extraction.features.values()), extracted=extraction.extracted, features_reused=extraction.reused,
        rejected=len(extraction.rejected), duplicate_groups=int(extraction.duplicates["group"].nunique()), duplicate_files=len(extraction.duplicates),
    )
    result_tables: dict[str, pd.DataFrame] = {}
    try:
        if evaluate:
            result_tables = evaluate_and_report(datasets_from(extraction.features), config, record, features_uri=store.features_uri)
    except ConfigError as error:
        # Checked again on what extraction kept (a speaker whose recordings were
        # all rejected no longer counts): the features stay cached and the run is
        # recorded, so the user sees what was extracted and why it stopped.
        record.stopped = str(error)
        _finish(record, config, started)
        raise EvaluationNotRun(str(error), record=record, extraction=extraction) from None
    _finish(record, config, started)
    return record, extraction, result_tables


@contextmanager
def recorded_if_it_fails(record: RunRecord, config: RunConfig, started: float) -> Iterator[None]:
    """Write the run's record, with why in ``stopped``, when what this wraps fails or is interrupted; the error goes on.

    Without it a crashed or stopped run (a task's error, Ctrl-C, ``SIGTERM``
    from a scheduler) left ``runs/<id>/`` without ``run.json``: no record of
    what it did, and an id ``crossemo report --compare`` did not know.
    """
    from crossemo import orchestration

    try:
        yield
    except EvaluationNotRun:
        raise  # recorded already, as features only
    except BaseException as error:
        if isinstance(error, KeyboardInterrupt):
            record.stopped = f"interrupted by {orchestration.interrupting_signal()}"
        else:
            first_line = next(iter(str(error).strip().splitlines()), "")
            record.stopped = f"failed: {type(error).__name__}{': ' + first_line if first_line else ''}"
        try:
            _finish(record, config, started)
        except Exception:  # the run's own error says more than a failure to record it (the storage may be what failed)
            pass
        raise


def _finish(record: RunRecord, config: RunConfig, started: float) -> None:
    """Time the run and write its record."""
    record.timings["total_wall_seconds"] = time.perf_counter() - started
    write_record(record, config.out, storage_options=config.fs_options)
