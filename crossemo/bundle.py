"""Model bundles: a fitted method saved as a folder whose loading runs no code from the folder.

``crossemo train`` saves the method it fits with :func:`save_bundle`;
``crossemo predict`` checks a bundle with :func:`check_bundle` before any
work and loads it with :func:`load_bundle`. A bundle is a local folder or an
``s3://`` prefix (through :mod:`crossemo.storage`) holding:

- ``model.json``: ``format_version`` (:data:`FORMAT_VERSION`), the caller's
  metadata verbatim at the top level (``crossemo_version`` among it; the
  feature set, classes, decode settings, training corpora … as the caller
  gives them), and under ``"bundle"`` what loading needs: the method's name in
  :data:`~crossemo.methods.METHODS`, its ``get_params()``, how to rebuild its
  torch parts (layer sizes, network settings), the SHA-256 of every other file
  and the model id.
- ``method.skops``: the fitted method written by ``skops.io``, its torch
  parts replaced by ``None``.
- ``weights.safetensors`` (``dbn``, ``fcnn`` and ``dann`` only): the state
  dicts of those torch parts, keys ``<attribute>.<state key>``.

Safety rules:

- Nothing is pickled and nothing is read with pickle or ``torch.load``.
  ``method.skops`` is loaded with ``skops.io.loads(trusted=TRUSTED_TYPES)``, a
  fixed list of exactly the types crossemo's methods hold beyond those skops
  trusts itself (numpy arrays, builtins, scikit-learn estimators); a file with
  any other type (``builtins.exec``, ``os.system`` …) is refused before
  anything in it is built, naming the types. Torch weights are plain tensors
  in safetensors; the modules are rebuilt from a fixed set of layer types and
  sizes in ``model.json`` (skorch's ``save_params`` would pickle).
- ``sklearn.tree._tree.Tree`` is on the list because the forests need it, but
  skops distrusts it for a reason: predict follows its node links without
  bounds checks. :func:`load_bundle` therefore checks every tree of a forest
  (links in range and pointing forward, features within the input) before
  returning it.
- Every file's SHA-256 must match ``model.json``: a damaged or partly copied
  bundle is refused. (The digests catch damage, not a crafted bundle; the
  rules above are what make a crafted one harmless.)
- The model id is the SHA-256 of ``model.json``'s ``format_version`` and
  ``"bundle"`` record (the files' digests, the method, how to rebuild it,
  and the digests of the metadata entries that decide what the model
  computes from audio, :data:`SEALED_ENTRIES`), not of the rest of the
  caller's metadata. A sealed entry edited, added or removed afterwards is
  refused: labels from other decode rules would carry the same model id. skops names entries by object ids and stamps
  them with the time, so its archive is rewritten with ids numbered in order
  of appearance and fixed times: saving the same fitted method (or one fitted
  again with the same data and seed) gives the same bytes, hence the same id.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import safetensors.torch
import skops.io
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils.validation import check_is_fitted
from skops.io.exceptions import UntrustedTypesFoundException
from torch import nn

import crossemo
from crossemo import storage
from crossemo.methods import DANN, DBN, METHODS, FineTunedFCNN
from crossemo.methods._torch import SeededDropout
from crossemo.methods.dann import build_net

FORMAT_VERSION = 1
"""The bundle layout this crossemo writes, and the newest it reads."""

FEATURE_ENTRIES = ("feature_set", "feature_set_id", "feature_names", "decode")
"""Metadata entries that decide how audio becomes the model's input features (the feature set and the decode rules)."""

SEALED_ENTRIES = (*FEATURE_ENTRIES, "classes")
"""Metadata entries that decide what a bundle computes from audio: each one's digest is in the record, so the model id covers it.
(Bundles saved before this have no ``"sealed"`` record, and their entries are not checked.)"""

MODEL_FILE = "model.json"
METHOD_FILE = "method.skops"
WEIGHTS_FILE = "weights.safetensors"

RESERVED_KEYS = ("format_version", "bundle")
"""Top-level keys of ``model.json`` that the caller's metadata may not use."""

TRUSTED_TYPES: tuple[str, ...] = (
    # crossemo's methods: built with __new__ and scikit-learn's __setstate__, which only restores attributes.
    "crossemo.methods.coral.Coral",
    "crossemo.methods.dann.DANN",
    "crossemo.methods.dbn.DBN",
    "crossemo.methods.fcnn.FineTunedFCNN",
    "crossemo.methods.kmm_reweight.KMMReweight",
    "crossemo.methods.majority.Majority",
    "crossemo.methods.multitask.MultiTask",
    "crossemo.methods.norm_distribution.NormDistribution",
    "crossemo.methods.norm_neutral.NormNeutral",
    "crossemo.methods.rf.RandomForest",
    "crossemo.methods.self_training.SelfTraining",
    "crossemo.methods.speaker_norm.SpeakerNorm",
    "crossemo.methods.speaker_norm_linear.SpeakerNormLinear",
    "crossemo.methods.subspace_alignment.SubspaceAlignment",
    # skada's adapters of coral and subspace_alignment: estimators holding arrays.
    "skada._mapping.CORALAdapter",
    "skada._subspace.SubspaceAlignmentAdapter",
    # The forests' trees; their node arrays are checked after loading (see the module docstring).
    "sklearn.tree._tree.Tree",
)
"""Types a ``method.skops`` may hold beyond skops's own trusted ones: what ``skops.io.get_untrusted_types``
reports for every method of :data:`~crossemo.methods.METHODS`, reviewed (``tests/test_bundle.py`` checks it is exactly that)."""

TORCH_PARTS: dict[type, dict[str, str]] = {DBN: {"network_": "sequential"}, FineTunedFCNN: {"network_": "sequential"}, DANN: {"net_": "skada_dann"}}
"""Per method class, its attributes that hold torch objects and how each is stored."""

_LAYERS: dict[str, type[nn.Module]] = {"Linear": nn.Linear, "Tanh": nn.Tanh, "Sigmoid": nn.Sigmoid, "ReLU": nn.ReLU, "Dropout": nn.Dropout, "SeededDropout": SeededDropout}
"""The layer types a stored ``torch.nn.Sequential`` may contain."""

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
"""The zip entries' time stamp (the earliest a zip can hold), so the archive does not depend on when it was written."""


class BundleError(ValueError):
    """A model bundle that cannot be saved or loaded; the message names the cause in one line."""


@dataclass(frozen=True)
class BundleInfo:
    """A bundle checked without building its method.

    Attributes:
        metadata: the whole ``model.json``.
        model_id: the bundle's model id (hex SHA-256).
    """

    metadata: dict[str, Any]
    model_id: str


@dataclass(frozen=True)
class LoadedBundle:
    """A loaded bundle.

    Attributes:
        method: the fitted method, ready for ``predict(X, speakers=...)``.
        metadata: the whole ``model.json``.
        model_id: the bundle's model id (hex SHA-256).
    """

    method: Any
    metadata: dict[str, Any]
    model_id: str


def save_bundle(method, uri: str, *, metadata: dict, storage_options: storage.StorageOptions | None = None) -> str:
    """Save a fitted method as a model bundle.

    Args:
        method: a fitted method of :data:`~crossemo.methods.METHODS` whose parameters are JSON values.
        uri: the bundle folder, local or ``s3://bucket/prefix``; it must not hold a ``model.json`` yet.
        metadata: JSON-serialisable facts stored verbatim at the top level of ``model.json``;
            ``crossemo_version`` is set to this crossemo's version unless given.
        storage_options: filesystem options for ``uri``.

    Returns:
        the model id (hex SHA-256).

    Raises:
        BundleError: not a fitted crossemo method, a parameter or metadata that is not JSON, a
            reserved metadata key, or ``uri`` already holding a bundle.
    """
    name = _method_name(method)
    metadata = _checked_metadata(metadata)
    params = _json_params(method, name)
    skops_view, torch_specs, tensors = _split_torch(method)
    files = {METHOD_FILE: _canonical_skops(skops.io.dumps(skops_view))}
    if tensors:
        files[WEIGHTS_FILE] = safetensors.torch.save(tensors)
    record = {
        "method": name,
        "params": params,
        "torch": torch_specs,
        "files": [{"name": file, "sha256": hashlib.sha256(data).hexdigest()} for file, data in files.items()],
        "sealed": {name: _entry_digest(metadata[name]) for name in SEALED_ENTRIES if name in metadata},
    }
    record["model_id"] = _model_id(FORMAT_VERSION, record)
    model = {"format_version": FORMAT_VERSION, **metadata, "bundle": record}
    if storage.exists(storage.join(uri, MODEL_FILE), storage_options=storage_options):
        raise BundleError(f"{uri} already holds a model bundle; save to a new folder")
    for file, data in files.items():
        storage.write_bytes(data, storage.join(uri, file), storage_options=storage_options)
    # model.json last: a folder without it is an unfinished save, never a bundle.
    storage.write_bytes((json.dumps(model, indent=2) + "\n").encode(), storage.join(uri, MODEL_FILE), storage_options=storage_options)
    return record["model_id"]


def check_bundle(uri: str, *, storage_options: storage.StorageOptions | None = None) -> BundleInfo:
    """Check a bundle without building its method: layout, versions, digests and the types in ``method.skops``.

    Cheap enough to run before any other work; :func:`load_bundle` does the same checks and more.

    Args:
        uri: the bundle folder, local or ``s3://bucket/prefix``.
        storage_options: filesystem options for ``uri``.

    Returns:
        ``model.json`` and the model id.

    Raises:
        BundleError: see :func:`load_bundle`.
    """
    model, files = _read_checked(uri, storage_options)
    _refuse_untrusted(files[METHOD_FILE], uri)
    return BundleInfo(metadata=model, model_id=model["bundle"]["model_id"])


def load_bundle(uri: str, *, storage_options: storage.StorageOptions | None = None) -> LoadedBundle:
    """Load a bundle saved by :func:`save_bundle`, running no code from it.

    Args:
        uri: the bundle folder, local or ``s3://bucket/prefix``.
        storage_options: filesystem options for ``uri``.

    Returns:
        the fitted method, ``model.json`` and the model id.

    Raises:
        BundleError: no such folder; ``model.json`` missing, unreadable or not a bundle's; a
            ``format_version`` newer than :data:`FORMAT_VERSION`; another crossemo major version;
            a file whose SHA-256 differs from ``model.json``'s; a type in ``method.skops`` outside
            :data:`TRUSTED_TYPES` (named); weights or trees that do not fit the method.
    """
    model, files = _read_checked(uri, storage_options)
    record = model["bundle"]
    data = files[METHOD_FILE]
    _refuse_untrusted(data, uri)
    try:
        method = skops.io.loads(data, trusted=list(TRUSTED_TYPES))
    except UntrustedTypesFoundException as error:  # skops's own refusal, should its audit ever see more than the one above
        raise BundleError(f"{uri}/{METHOD_FILE}: {str(error).splitlines()[0]}; it was not loaded") from None
    except Exception as error:  # trusted types built from contents no save writes (digests matched, so not damage): refuse
        raise BundleError(f"{uri}/{METHOD_FILE} cannot be built ({type(error).__name__}: {_first_line(error)})") from None
    expected = METHODS[record["method"]]
    if type(method) is not expected:
        raise BundleError(f"{uri}/{METHOD_FILE} holds a {type(method).__name__}, but model.json names method {record['method']!r} ({expected.__name__})")
    if _json_params(method, record["method"]) != record["params"]:
        raise BundleError(f"{uri}/{METHOD_FILE} has other parameters than model.json lists for method {record['method']!r}")
    _restore_torch(method, record["torch"], files.get(WEIGHTS_FILE), uri)
    _check_forest(method, uri)
    return LoadedBundle(method=method, metadata=model, model_id=record["model_id"])


# --- saving --------------------------------------------------------------------------------------


def _method_name(method) -> str:
    names = [name for name, cls in METHODS.items() if type(method) is cls]
    if not names:
        raise BundleError(f"a bundle holds one of crossemo's methods ({', '.join(METHODS)}); got a {type(method).__name__}")
    try:
        check_is_fitted(method)
    except ValueError:  # sklearn's NotFittedError
        raise BundleError(f"method {names[0]!r} is not fitted; a bundle holds a fitted method") from None
    return names[0]


def _checked_metadata(metadata: dict) -> dict:
    if not isinstance(metadata, dict) or not all(isinstance(key, str) for key in metadata):
        raise BundleError("metadata must be a dict with str keys")
    reserved = sorted(set(metadata) & set(RESERVED_KEYS))
    if reserved:
        raise BundleError(f"metadata may not use the key(s) {', '.join(reserved)}: model.json keeps them for the bundle itself")
    try:
        json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise BundleError(f"metadata must be JSON-serialisable: {error}") from None
    version = metadata.get("crossemo_version", crossemo.__version__)
    if _major(version) is None:
        raise BundleError(f"metadata's crossemo_version must be a version string such as {crossemo.__version__!r}; got {version!r}")
    return {**metadata, "crossemo_version": version}


def _json_params(method, name: str) -> dict:
    """The method's ``get_params()`` as JSON values (tuples become lists)."""
    params = method.get_params(deep=False)
    for key, value in params.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise BundleError(f"parameter {key!r} of method {name!r} is a {type(value).__name__}, not a JSON value; a bundle stores JSON parameters only") from None
    return json.loads(json.dumps(params))


def _split_torch(method) -> tuple[Any, list[dict], dict[str, torch.Tensor]]:
    """A copy of ``method`` with its torch parts replaced by ``None``, how to rebuild them, and their tensors."""
    parts = TORCH_PARTS.get(type(method), {})
    stray = [key for key, value in vars(method).items() if key not in parts and isinstance(value, (nn.Module, torch.Tensor))]
    if stray:
        raise BundleError(f"{type(method).__name__} holds torch objects in {', '.join(stray)}, which a bundle does not know how to store")
    view = type(method).__new__(type(method))
    view.__dict__.update(vars(method))
    specs, tensors = [], {}
    for attribute, kind in parts.items():
        part = getattr(method, attribute)
        if kind == "sequential":
            specs.append({"attribute": attribute, "kind": kind, "layers": [_layer_spec(layer) for layer in part],
                          "frozen": [key for key, parameter in part.named_parameters() if not parameter.requires_grad]})
            state = part.state_dict()
        else:
            # skada's DANN keeps every weight (its domain classifier too) in the module; its criterion holds none.
            specs.append({"attribute": attribute, "kind": kind, "config": method.net_config_})
            state = part.module_.state_dict()
        tensors.update({f"{attribute}.{key}": value.detach().contiguous() for key, value in state.items()})
        setattr(view, attribute, None)
    return view, specs, tensors


def _layer_spec(layer: nn.Module) -> list:
    kind = type(layer).__name__
    if _LAYERS.get(kind) is not type(layer):
        raise BundleError(f"a bundle stores layers of the types {', '.join(_LAYERS)}; got a {type(layer).__module__}.{kind}")
    if isinstance(layer, nn.Linear):
        if layer.bias is None:
            raise BundleError("a bundle stores Linear layers with a bias only")
        return [kind, layer.in_features, layer.out_features]
    if isinstance(layer, (nn.Dropout, SeededDropout)):
        return [kind, layer.p]
    return [kind]


def _canonical_skops(data: bytes) -> bytes:
    """A skops archive rewritten so that the same object always gives the same bytes.

    skops names its array files and memo entries after ``id()`` of the saved
    objects and stamps every entry with the current time; here the ids are
    numbered in order of first appearance in the schema and every entry gets
    :data:`_FIXED_TIME`. skops loads the result as it loads its own.
    """
    numbers: dict[int, int] = {}

    def renumber(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "__id__" and isinstance(value, int):
                    node[key] = numbers.setdefault(value, len(numbers))
                elif key == "file" and isinstance(value, str) and re.fullmatch(r"\d+\.\w+", value):
                    stem, suffix = value.split(".", 1)
                    node[key] = f"{numbers.setdefault(int(stem), len(numbers))}.{suffix}"
                else:
                    renumber(value)
        elif isinstance(node, list):
            for item in node:
                renumber(item)

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        schema = json.loads(archive.read("schema.json"))
        renumber(schema)
        members = {}
        for name in archive.namelist():
            if name != "schema.json":
                stem, suffix = name.split(".", 1)
                members[f"{numbers[int(stem)]}.{suffix}"] = archive.read(name)
    members["schema.json"] = json.dumps(schema, indent=2).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(members):
            archive.writestr(zipfile.ZipInfo(name, date_time=_FIXED_TIME), members[name])
    return out.getvalue()


def _entry_digest(value: Any) -> str:
    """SHA-256 of one metadata entry, as canonical JSON of what ``model.json`` holds (keys become text there)."""
    stored = json.loads(json.dumps(value))
    return hashlib.sha256(json.dumps(stored, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _model_id(format_version: int, record: dict) -> str:
    """SHA-256 of the format version and the bundle record (without the id), as canonical JSON."""
    content = {"format_version": format_version, "bundle": {key: value for key, value in record.items() if key != "model_id"}}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# --- loading -------------------------------------------------------------------------------------


def _read_checked(uri: str, storage_options: storage.StorageOptions | None) -> tuple[dict, dict[str, bytes]]:
    """``model.json`` and the bundle's files, checked up to their digests and the model id."""
    fs, path = storage.filesystem(uri, storage_options=storage_options)
    try:
        is_folder = fs.isdir(path)
    except OSError as error:
        raise BundleError(f"cannot reach model bundle {uri}: {storage.describe_error(error)}") from None
    if not is_folder:
        raise BundleError(f"model bundle {uri} does not exist or is not a folder")
    text = _read_file(uri, MODEL_FILE, storage_options, missing=f"{uri} is not a model bundle: it has no {MODEL_FILE}")
    try:
        model = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"{uri}/{MODEL_FILE} is not readable JSON: {_first_line(error)}") from None
    if not isinstance(model, dict):
        raise BundleError(f"{uri}/{MODEL_FILE} is not a model bundle's: it holds a JSON {type(model).__name__}, not an object")
    _check_versions(model, uri)
    record = _checked_record(model.get("bundle"), uri)
    files = {}
    for entry in record["files"]:
        name = entry["name"]
        files[name] = _read_file(uri, name, storage_options, missing=f"model bundle {uri} lacks {name}, which {MODEL_FILE} lists")
        if hashlib.sha256(files[name]).hexdigest() != entry["sha256"]:
            raise BundleError(f"{uri}/{name} does not match the SHA-256 in {MODEL_FILE}: the file was changed or damaged")
    if _model_id(model["format_version"], record) != record["model_id"]:
        raise BundleError(f"{uri}/{MODEL_FILE}: its model_id does not match its contents; the file was edited")
    _check_sealed(model, record, uri)
    _check_described_method(model, record, uri)
    return model, files


def _check_sealed(model: dict, record: dict, uri: str) -> None:
    """Refuse a :data:`SEALED_ENTRIES` entry of ``model.json`` edited, added or removed since the bundle was saved."""
    if "sealed" not in record:  # saved before entries were sealed
        return
    sealed = record["sealed"]
    # A later crossemo may seal more entries: check every one the bundle lists.
    for name in dict.fromkeys([*SEALED_ENTRIES, *sealed]):
        if name not in sealed and name not in model:
            continue
        if name not in sealed or name not in model or _entry_digest(model[name]) != sealed[name]:
            change = "added" if name not in sealed else "removed" if name not in model else "changed"
            raise BundleError(
                f"{uri}/{MODEL_FILE}: its {name!r} entry was {change} after the bundle was saved; "
                "a model holds only for the features it was trained on, so train a new bundle instead of editing one"
            )


def _check_described_method(model: dict, record: dict, uri: str) -> None:
    """Refuse a ``method`` or ``params`` entry of ``model.json`` that says otherwise than the bundle's own record.

    ``crossemo train`` writes both for people to read; the record (covered by
    the model id) holds what is loaded. They are not sealed, so that the same
    fitted method keeps its model id whatever is written beside it, but an
    edit must not make a bundle describe a model it does not hold.
    """
    if "method" in model and model["method"] != record["method"]:
        raise BundleError(f"{uri}/{MODEL_FILE}: its 'method' entry says {model['method']!r}, but the bundle holds a {record['method']!r}; was it edited?")
    params = model.get("params")
    if isinstance(params, dict):
        for name, value in params.items():
            if name not in record["params"] or record["params"][name] != value:
                raise BundleError(
                    f"{uri}/{MODEL_FILE}: its 'params' entry gives {name} = {value!r}, but the bundle's method has "
                    f"{record['params'].get(name, 'no such parameter')!r}; was it edited?"
                )


def _read_file(uri: str, name: str, storage_options: storage.StorageOptions | None, *, missing: str) -> bytes:
    try:
        return storage.read_bytes(storage.join(uri, name), storage_options=storage_options)
    except FileNotFoundError:
        raise BundleError(missing) from None
    except OSError as error:
        raise BundleError(f"cannot read {uri}/{name}: {storage.describe_error(error)}") from None


def _check_versions(model: dict, uri: str) -> None:
    version = model.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise BundleError(f"{uri}/{MODEL_FILE} has no valid format_version (a positive int); got {version!r}")
    if version > FORMAT_VERSION:
        raise BundleError(f"model bundle {uri} has format_version {version}, newer than this crossemo {crossemo.__version__} reads (up to {FORMAT_VERSION}); upgrade crossemo")
    made_by, running = _major(model.get("crossemo_version")), _major(crossemo.__version__)
    if made_by is None:
        raise BundleError(f"{uri}/{MODEL_FILE} has no valid crossemo_version; got {model.get('crossemo_version')!r}")
    if made_by != running:
        raise BundleError(f"model bundle {uri} was made by crossemo {model['crossemo_version']}; this crossemo {crossemo.__version__} reads bundles of major version {running} only")


def _major(version) -> int | None:
    match = re.match(r"(\d+)(\.|$)", version) if isinstance(version, str) else None
    return int(match.group(1)) if match else None


def _checked_record(record, uri: str) -> dict:
    """The ``"bundle"`` record of ``model.json`` with the shape :func:`save_bundle` gives it."""
    def refuse(what: str):
        return BundleError(f"{uri}/{MODEL_FILE} is not a crossemo model bundle's: {what}")

    if not isinstance(record, dict):
        raise refuse('no "bundle" object')
    if record.get("method") not in METHODS:
        raise refuse(f"unknown method {record.get('method')!r}")
    if not isinstance(record.get("params"), dict) or not isinstance(record.get("torch"), list) or not isinstance(record.get("model_id"), str):
        raise refuse("params, torch or model_id missing")
    files = record.get("files")
    if not isinstance(files, list) or not all(isinstance(entry, dict) and set(entry) == {"name", "sha256"} for entry in files):
        raise refuse("files is not a list of {name, sha256}")
    names = [entry["name"] for entry in files]
    # Only the bundle's own file names: model.json cannot make the loader read anything else.
    if METHOD_FILE not in names or not set(names) <= {METHOD_FILE, WEIGHTS_FILE} or len(set(names)) != len(names):
        raise refuse(f"files must list {METHOD_FILE} and at most {WEIGHTS_FILE}; got {names}")
    if (WEIGHTS_FILE in names) != bool(record["torch"]):
        raise refuse(f"{WEIGHTS_FILE} must be listed exactly when the method has torch parts")
    sealed = record.get("sealed", {})
    if not isinstance(sealed, dict) or not all(isinstance(digest, str) for digest in sealed.values()) or set(sealed) & set(RESERVED_KEYS):
        raise refuse("sealed must map model.json entries to digests")
    return record


def _refuse_untrusted(data: bytes, uri: str) -> None:
    """Refuse a ``method.skops`` that is not a skops archive or holds a type outside :data:`TRUSTED_TYPES`."""
    try:
        found = skops.io.get_untrusted_types(data=data)
    except Exception as error:  # skops raises many kinds on a file that is no archive or a malformed one; each means "not loadable"
        raise BundleError(f"{uri}/{METHOD_FILE} is not a readable skops archive ({type(error).__name__}); it was not loaded") from None
    untrusted = sorted(set(found) - set(TRUSTED_TYPES))
    if untrusted:
        raise BundleError(f"{uri}/{METHOD_FILE} holds types crossemo does not trust: {', '.join(untrusted)}; it was not loaded")


def _restore_torch(method, specs: list, weights: bytes | None, uri: str) -> None:
    """Rebuild the method's torch parts from their specs in ``model.json`` and the tensors in ``weights.safetensors``."""
    expected = TORCH_PARTS.get(type(method), {})
    listed = [spec.get("attribute") if isinstance(spec, dict) else spec for spec in specs]
    if not all(isinstance(spec, dict) for spec in specs) or sorted(map(str, listed)) != sorted(expected):
        raise BundleError(f"{uri}/{MODEL_FILE} lists torch parts {listed} for a {type(method).__name__}, which has {sorted(expected)}")
    if not specs:
        return
    try:
        tensors = safetensors.torch.load(weights)
    except Exception as error:  # safetensors raises its own error kinds on a malformed file
        raise BundleError(f"{uri}/{WEIGHTS_FILE} is not a readable safetensors file ({type(error).__name__})") from None
    for spec in specs:
        attribute = spec["attribute"]
        if spec.get("kind") != expected[attribute]:
            raise BundleError(f"{uri}/{MODEL_FILE}: {attribute} of a {type(method).__name__} is stored as {expected[attribute]!r}, not {spec.get('kind')!r}")
        if getattr(method, attribute, None) is not None:
            raise BundleError(f"{uri}/{METHOD_FILE} holds a value in {attribute}, where the bundle's weights belong")
        prefix = f"{attribute}."
        state = {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
        try:
            setattr(method, attribute, _rebuild_sequential(spec, state) if spec["kind"] == "sequential" else _rebuild_dann(spec, state))
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise BundleError(f"{uri}: the weights of {attribute} do not fit its architecture in {MODEL_FILE} ({type(error).__name__}: {_first_line(error)})") from None


def _rebuild_sequential(spec: dict, state: dict[str, torch.Tensor]) -> nn.Sequential:
    layers = []
    for layer in spec["layers"]:
        kind, *args = layer
        if kind not in _LAYERS or not all(isinstance(arg, (int, float)) and not isinstance(arg, bool) for arg in args):
            raise ValueError(f"layer {layer!r} is not one a bundle stores")
        # On the meta device a Linear layer allocates nothing; load_state_dict(assign=True) then takes the stored tensors.
        layers.append(nn.Linear(*args, device="meta") if kind == "Linear" else _LAYERS[kind](*args))
    network = nn.Sequential(*layers)
    network.load_state_dict(state, strict=True, assign=True)
    parameters = dict(network.named_parameters())
    for key in spec["frozen"]:
        parameters[key].requires_grad_(False)
    return network.eval()


def _rebuild_dann(spec: dict, state: dict[str, torch.Tensor]):
    # Building the network draws initial weights from torch's global generator; fork it so loading leaves it as it was.
    with torch.random.fork_rng(devices=[]):
        net = build_net(**spec["config"])
        net.initialize()
    net.module_.load_state_dict(state, strict=True)
    net.module_.eval()
    return net


def _check_forest(method, uri: str) -> None:
    """Refuse trees whose node arrays would make predict read outside them (see the module docstring)."""
    forest = getattr(method, "forest_", None)
    if forest is None:
        return
    if type(forest) is not RandomForestClassifier or not all(type(tree) is DecisionTreeClassifier for tree in forest.estimators_):
        raise BundleError(f"{uri}/{METHOD_FILE}: the method's forest_ is not a random forest of decision trees")
    for estimator in forest.estimators_:
        tree = estimator.tree_
        nodes = np.arange(tree.node_count)
        left, right, feature = tree.children_left, tree.children_right, tree.feature
        leaf = left == -1
        inner = ~leaf
        well_formed = (
            len(left) == len(right) == len(feature) == tree.node_count > 0
            and np.array_equal(leaf, right == -1)
            # Children after their parent: every path ends, no cycle.
            and bool(np.all((left[inner] > nodes[inner]) & (left[inner] < tree.node_count)))
            and bool(np.all((right[inner] > nodes[inner]) & (right[inner] < tree.node_count)))
            and bool(np.all((feature[inner] >= 0) & (feature[inner] < forest.n_features_in_)))
        )
        if not well_formed:
            raise BundleError(f"{uri}/{METHOD_FILE}: a tree of the forest has node links or features out of range; the file is damaged or crafted")


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""
