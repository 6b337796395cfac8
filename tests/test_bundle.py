"""Model bundles: every method survives a save and a load exactly, locally and on S3, and loading runs no code from the bundle."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io
import torch

import crossemo
from crossemo import audio, bundle, corpora, storage
from crossemo.bundle import (
    FORMAT_VERSION,
    METHOD_FILE,
    MODEL_FILE,
    TRUSTED_TYPES,
    WEIGHTS_FILE,
    BundleError,
    check_bundle,
    load_bundle,
    save_bundle,
)
from crossemo.features.extractor import FeatureExtractor
from crossemo.methods import METHODS, SourceFCNN
from tests.test_methods import FAST_SOURCE, fast, fit

SOURCE_SPEAKERS = ("01", "02")
TARGET_TRAINING, TARGET_TEST = "f1", "m1"
PER_EMOTION = 3
"""Real utterances used: RAVDESS actors 1 and 2 as the source, EMOVO f1 as the target's training speaker and m1 as its test speaker, 3 per emotion each."""

METADATA = {"feature_set": "is10", "classes": ["neutral", "anger", "joy", "sadness"], "training_corpora": ["ravdess", "emovo"]}


@pytest.fixture(scope="module")
def real(shared_corpora):
    """The training and test arrays of scenario 3 (``tests.test_methods.fit`` takes them), from is10 features of real speech."""
    extractor = FeatureExtractor("is10")
    frames = []
    for corpus, speakers in (("ravdess", SOURCE_SPEAKERS), ("emovo", (TARGET_TRAINING, TARGET_TEST))):
        rows = corpora.prepare(corpus, str(shared_corpora / corpus)).utterances
        rows = rows[rows["speaker"].isin(speakers)].sort_values("uri")
        frames.append(rows.groupby(["speaker", "emotion"]).head(PER_EMOTION))
    rows = pd.concat(frames, ignore_index=True)
    X = np.stack([extractor.extract(prepared.signal, prepared.sampling_rate) for prepared in (audio.load(uri).analysis for uri in rows["uri"])])
    y = rows["emotion"].to_numpy(str)
    speakers = (rows["corpus"] + "/" + rows["speaker"]).to_numpy(str)
    test = speakers == f"emovo/{TARGET_TEST}"
    train = {"X": X[~test], "y": y[~test], "is_target": speakers[~test] == f"emovo/{TARGET_TRAINING}", "speakers": speakers[~test]}
    return train, {"X": X[test], "y": y[test], "speakers": speakers[test]}


@pytest.fixture(scope="module")
def saved(real, tmp_path_factory):
    """``saved(name, unlabelled)``: that method fitted on the real rows (with or without the test rows as unlabelled) and its local bundle, made once."""
    folder, made = tmp_path_factory.mktemp("bundles"), {}

    def get(name: str, unlabelled: bool):
        if (name, unlabelled) not in made:
            train, test = real
            method = fit(fast(name), train, test if unlabelled else None)
            uri = str(folder / f"{name}-{'unlabelled' if unlabelled else 'labelled'}")
            made[name, unlabelled] = method, uri, save_bundle(method, uri, metadata=METADATA)
        return made[name, unlabelled]

    return get


def outputs(method, test) -> dict[str, np.ndarray]:
    """What ``crossemo predict`` asks of a method: labels, and probabilities where the method gives them."""
    out = {"predict": method.predict(test["X"], speakers=test["speakers"])}
    if hasattr(method, "predict_proba"):
        out["predict_proba"] = method.predict_proba(test["X"], speakers=test["speakers"])
    return out


def assert_same_outputs(loaded, original, test) -> None:
    expected, got = outputs(original, test), outputs(loaded, test)
    assert got.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def assert_one_line(error: pytest.ExceptionInfo) -> None:
    assert isinstance(error.value, ValueError) and "\n" not in str(error.value)


def rewrite(uri: str, name: str, data: bytes) -> None:
    """Replace a file of a bundle and update ``model.json`` as a forger would: digests and model id match again."""
    Path(uri, name).write_bytes(data)
    model = json.loads(Path(uri, MODEL_FILE).read_text())
    record = model["bundle"]
    for entry in record["files"]:
        if entry["name"] == name:
            entry["sha256"] = hashlib.sha256(data).hexdigest()
    record["model_id"] = bundle._model_id(model["format_version"], record)
    Path(uri, MODEL_FILE).write_text(json.dumps(model))


def copy_bundle(uri: str, tmp_path: Path) -> str:
    target = tmp_path / "copy"
    target.mkdir()
    for path in Path(uri).iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return str(target)


# --- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("unlabelled", [False, True], ids=["labelled-only", "with-unlabelled"])
@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_predicts_exactly_the_same_after_a_round_trip(saved, real, name, unlabelled):
    method, uri, model_id = saved(name, unlabelled)
    loaded = load_bundle(uri)
    assert type(loaded.method) is type(method) and loaded.model_id == model_id
    assert loaded.method.get_params() == method.get_params()
    assert_same_outputs(loaded.method, method, real[1])
    model = loaded.metadata
    assert model["format_version"] == FORMAT_VERSION and model["crossemo_version"] == crossemo.__version__
    assert {key: model[key] for key in METADATA} == METADATA
    assert model["bundle"]["method"] == name and model["bundle"]["params"] == json.loads(json.dumps(method.get_params()))
    assert check_bundle(uri).model_id == model_id


def test_torch_parts_are_rebuilt_with_their_weights_and_frozen_layers(saved):
    method, uri, _ = saved("fcnn", True)
    loaded = load_bundle(uri).method
    for (key, original), (loaded_key, restored) in zip(method.network_.state_dict().items(), loaded.network_.state_dict().items()):
        assert key == loaded_key and torch.equal(original, restored)
    assert [p.requires_grad for p in loaded.network_.parameters()] == [p.requires_grad for p in method.network_.parameters()]
    assert not all(p.requires_grad for p in loaded.network_.parameters()) and not loaded.network_.training


def test_loading_a_dann_leaves_torch_global_generator_alone(saved):
    _, uri, _ = saved("dann", True)
    before = torch.get_rng_state()
    load_bundle(uri)
    assert torch.equal(torch.get_rng_state(), before)


def test_the_model_id_is_stable_and_names_the_fitted_parameters(saved, real, tmp_path):
    train, test = real
    method, uri, model_id = saved("dann", True)
    assert save_bundle(method, str(tmp_path / "again"), metadata={**METADATA, "note": "metadata is not part of the id"}) == model_id
    assert Path(tmp_path, "again", METHOD_FILE).read_bytes() == Path(uri, METHOD_FILE).read_bytes()
    refit = fit(fast("dann"), train, test)
    assert save_bundle(refit, str(tmp_path / "refit"), metadata=METADATA) == model_id
    other_seed = fit(fast("dann", random_state=1), train, test)
    assert save_bundle(other_seed, str(tmp_path / "other"), metadata=METADATA) != model_id
    _, _, rf_id = saved("rf", False)
    assert save_bundle(fit(fast("rf"), train), str(tmp_path / "rf"), metadata=METADATA) == rf_id


def test_the_model_id_covers_the_entries_that_decide_the_features(saved, tmp_path):
    method, _, model_id = saved("rf", False)
    decode = {"analysis_rate": 16000, "channel": "mean", 1: "a key that model.json holds as text"}
    first = save_bundle(method, str(tmp_path / "a"), metadata={**METADATA, "decode": decode})
    assert first != model_id  # METADATA has no decode
    assert save_bundle(method, str(tmp_path / "b"), metadata={**METADATA, "decode": {**decode, "analysis_rate": 8000}}) != first
    assert load_bundle(str(tmp_path / "a")).model_id == first


def test_an_entry_sealed_by_a_later_crossemo_is_checked_too(saved, tmp_path):
    _, uri, _ = saved("rf", False)
    uri = copy_bundle(uri, tmp_path)
    model = json.loads(Path(uri, MODEL_FILE).read_text())
    model["vad"] = {"threshold": 0.5}
    model["bundle"]["sealed"]["vad"] = bundle._entry_digest(model["vad"])
    model["bundle"]["model_id"] = bundle._model_id(model["format_version"], model["bundle"])
    Path(uri, MODEL_FILE).write_text(json.dumps(model))
    load_bundle(uri)
    model["vad"]["threshold"] = 0.9
    Path(uri, MODEL_FILE).write_text(json.dumps(model))
    with pytest.raises(BundleError, match="its 'vad' entry was changed after the bundle was saved"):
        load_bundle(uri)


def test_a_bundle_round_trips_through_s3(saved, real, s3):
    method, _, model_id = saved("dann", True)
    uri = f"s3://{s3['bucket']}/models/dann"
    assert save_bundle(method, uri, metadata=METADATA, storage_options=s3["storage_options"]) == model_id
    assert sorted(Path(p).name for p in storage.list_files(uri, storage_options=s3["storage_options"])) == sorted([MODEL_FILE, METHOD_FILE, WEIGHTS_FILE])
    assert check_bundle(uri, storage_options=s3["storage_options"]).model_id == model_id
    loaded = load_bundle(uri, storage_options=s3["storage_options"])
    assert loaded.model_id == model_id
    assert_same_outputs(loaded.method, method, real[1])
    with pytest.raises(BundleError, match="does not exist") as error:
        load_bundle(f"s3://{s3['bucket']}/models/none", storage_options=s3["storage_options"])
    assert_one_line(error)


# --- safety ---------------------------------------------------------------------------------------


def test_the_trusted_types_are_exactly_those_the_methods_hold(saved):
    needed = set()
    for name in METHODS:
        for unlabelled in (False, True):
            needed |= set(skops.io.get_untrusted_types(file=Path(saved(name, unlabelled)[1], METHOD_FILE)))
    assert needed == set(TRUSTED_TYPES)


@pytest.mark.parametrize("name", ["rf", "dbn", "dann"])
def test_no_file_of_a_bundle_is_a_pickle(saved, name):
    _, uri, _ = saved(name, True)
    files = sorted(Path(uri).rglob("*"))
    assert {path.name for path in files} == {MODEL_FILE, METHOD_FILE} | ({WEIGHTS_FILE} if name != "rf" else set())
    assert not [path for path in files if path.suffix in (".pkl", ".pickle", ".pt", ".pth", ".joblib")]
    contents = {path.name: path.read_bytes() for path in files}
    with zipfile.ZipFile(io.BytesIO(contents[METHOD_FILE])) as archive:
        members = {f"{METHOD_FILE}/{member}": archive.read(member) for member in archive.namelist()}
    assert members and all(member.endswith((".npy", "schema.json")) for member in members)
    for name_, data in {**contents, **members}.items():
        if name_ == WEIGHTS_FILE:
            # safetensors: an 8-byte little-endian header length, then the JSON header (its first byte may be 0x80 by chance).
            header = int.from_bytes(data[:8], "little")
            assert data[8:9] == b"{" and json.loads(data[8:8 + header])
        else:
            assert not data.startswith(b"\x80"), f"{name_} starts with pickle's protocol opcode"
            assert data.startswith((b"{", b"PK\x03\x04", b"\x93NUMPY")), name_
    for member, data in members.items():
        if member.endswith(".npy"):
            np.load(io.BytesIO(data), allow_pickle=False)


def planted_skops(data: bytes, marker: Path) -> bytes:
    """``data`` (a method's skops archive) with an attribute whose loading would call ``builtins.exec`` to write ``marker``."""
    code = f"open({str(marker)!r}, 'w').write('ran')"
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    schema = json.loads(members["schema.json"])
    arguments = json.loads(zipfile.ZipFile(io.BytesIO(skops.io.dumps((code,)))).read("schema.json"))
    attributes = schema["content"]
    attributes["content"]["planted_"] = {"__class__": "exec", "__module__": "builtins", "__loader__": "ConstructorFromReduceNode", "content": arguments}
    attributes["key_types"]["content"].append(attributes["key_types"]["content"][0])
    members["schema.json"] = json.dumps(schema).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return out.getvalue()


def test_a_planted_code_payload_is_refused_and_never_runs(saved, tmp_path):
    _, original, _ = saved("speaker_norm_linear", False)
    marker = tmp_path / "payload-ran"
    payload = planted_skops(Path(original, METHOD_FILE).read_bytes(), marker)
    # The payload is live: were builtins.exec trusted, loading would run it.
    skops.io.loads(payload, trusted=[*TRUSTED_TYPES, "builtins.exec"])
    assert marker.read_text() == "ran"
    marker.unlink()
    uri = copy_bundle(original, tmp_path)
    rewrite(uri, METHOD_FILE, payload)
    for check in (load_bundle, check_bundle):
        with pytest.raises(BundleError, match=r"holds types crossemo does not trust: builtins\.exec; it was not loaded") as error:
            check(uri)
        assert_one_line(error)
    assert not marker.exists()


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def test_a_pickle_in_place_of_the_skops_file_is_refused_and_never_runs(saved, tmp_path):
    _, original, _ = saved("dbn", False)
    marker = tmp_path / "payload-ran"
    payload = pickle.dumps(_Payload(marker), protocol=4)
    assert payload.startswith(b"\x80")
    uri = copy_bundle(original, tmp_path)
    rewrite(uri, METHOD_FILE, payload)
    with pytest.raises(BundleError, match=r"method\.skops is not a readable skops archive") as error:
        load_bundle(uri)
    assert_one_line(error)
    assert not marker.exists()


def test_a_forest_whose_tree_links_point_outside_it_is_refused(saved, tmp_path):
    _, original, _ = saved("rf", False)
    method = skops.io.load(Path(original, METHOD_FILE), trusted=list(TRUSTED_TYPES))
    tree = method.forest_.estimators_[0].tree_
    state = tree.__getstate__()
    nodes = state["nodes"].copy()
    nodes["left_child"][0] = 10**9  # predict would read far outside the node array
    tree.__setstate__({**state, "nodes": nodes})
    uri = copy_bundle(original, tmp_path)
    rewrite(uri, METHOD_FILE, bundle._canonical_skops(skops.io.dumps(method)))
    with pytest.raises(BundleError, match="a tree of the forest has node links or features out of range") as error:
        load_bundle(uri)
    assert_one_line(error)


# --- errors ---------------------------------------------------------------------------------------


def edit_model(uri: str, change) -> None:
    model = json.loads(Path(uri, MODEL_FILE).read_text())
    change(model)
    Path(uri, MODEL_FILE).write_text(json.dumps(model))


@pytest.mark.parametrize("damage, message", [
    (lambda uri: Path(uri, "gone"), r"does not exist or is not a folder"),
    (lambda uri: Path(uri, MODEL_FILE), r"does not exist or is not a folder"),
    (lambda uri: Path(uri, MODEL_FILE).unlink(), r"is not a model bundle: it has no model\.json"),
    (lambda uri: Path(uri, MODEL_FILE).write_text('{"format_version": 1,'), r"model\.json is not readable JSON: Expecting"),
    (lambda uri: Path(uri, MODEL_FILE).write_text("[1, 2]"), r"model\.json is not a model bundle's: it holds a JSON list"),
    (lambda uri: edit_model(uri, lambda m: m.update(format_version=FORMAT_VERSION + 1)), rf"has format_version {FORMAT_VERSION + 1}, newer than this crossemo .* reads \(up to {FORMAT_VERSION}\); upgrade crossemo"),
    (lambda uri: edit_model(uri, lambda m: m.pop("format_version")), r"has no valid format_version"),
    (lambda uri: edit_model(uri, lambda m: m.update(crossemo_version="7.0.0")), r"was made by crossemo 7\.0\.0; this crossemo .* reads bundles of major version 0 only"),
    (lambda uri: edit_model(uri, lambda m: m.pop("crossemo_version")), r"has no valid crossemo_version"),
    (lambda uri: edit_model(uri, lambda m: m["bundle"]["files"].append({"name": "../../etc/passwd", "sha256": "0" * 64})), r"files must list method\.skops and at most weights\.safetensors"),
    (lambda uri: edit_model(uri, lambda m: m["bundle"].update(method="svm")), r"unknown method 'svm'"),
    (lambda uri: edit_model(uri, lambda m: m["bundle"]["params"].update(epochs=99)), r"model_id does not match its contents"),
    (lambda uri: Path(uri, WEIGHTS_FILE).unlink(), r"lacks weights\.safetensors, which model\.json lists"),
    (lambda uri: Path(uri, WEIGHTS_FILE).write_bytes(Path(uri, WEIGHTS_FILE).read_bytes()[:-1] + b"\x00"), r"weights\.safetensors does not match the SHA-256 in model\.json"),
    (lambda uri: Path(uri, METHOD_FILE).write_bytes(Path(uri, METHOD_FILE).read_bytes() + b" "), r"method\.skops does not match the SHA-256 in model\.json"),
], ids=["no-folder", "a-file", "no-model-json", "bad-json", "json-list", "newer-format", "no-format", "other-major", "no-version",
        "foreign-file", "unknown-method", "edited-params", "missing-weights", "damaged-weights", "damaged-skops"])
def test_a_broken_bundle_gives_a_one_line_bundle_error(saved, tmp_path, damage, message):
    folder = copy_bundle(saved("fcnn", False)[1], tmp_path)
    elsewhere = damage(folder)  # a damage that returns a path points the loader there instead
    uri = str(elsewhere) if isinstance(elsewhere, Path) else folder
    for check in (load_bundle, check_bundle):
        with pytest.raises(BundleError, match=message) as error:
            check(uri)
        assert_one_line(error)


def test_weights_that_do_not_fit_the_stored_architecture_are_refused(saved, tmp_path):
    uri = copy_bundle(saved("dbn", False)[1], tmp_path)
    model = json.loads(Path(uri, MODEL_FILE).read_text())
    model["bundle"]["torch"][0]["layers"][0][2] += 1
    model["bundle"]["model_id"] = bundle._model_id(model["format_version"], model["bundle"])
    Path(uri, MODEL_FILE).write_text(json.dumps(model))
    with pytest.raises(BundleError, match=r"the weights of network_ do not fit its architecture in model\.json \(RuntimeError") as error:
        load_bundle(uri)
    assert_one_line(error)


def test_what_cannot_be_saved_is_refused_in_one_line(saved, real, tmp_path):
    method, uri, _ = saved("speaker_norm_linear", False)
    train = real[0]
    source = SourceFCNN(**FAST_SOURCE).fit(train["X"][~train["is_target"]], train["y"][~train["is_target"]], speakers=train["speakers"][~train["is_target"]])
    cases = [
        (lambda: save_bundle(fast("rf"), str(tmp_path / "a"), metadata={}), r"method 'rf' is not fitted"),
        (lambda: save_bundle(source, str(tmp_path / "b"), metadata={}), r"a bundle holds one of crossemo's methods .*; got a SourceFCNN"),
        (lambda: save_bundle(method, str(tmp_path / "c"), metadata={"bundle": 1}), r"metadata may not use the key\(s\) bundle"),
        (lambda: save_bundle(method, str(tmp_path / "d"), metadata={"when": object()}), r"metadata must be JSON-serialisable"),
        (lambda: save_bundle(method, str(tmp_path / "e"), metadata={"score": float("nan")}), r"metadata must be JSON-serialisable"),
        (lambda: save_bundle(method, str(tmp_path / "f"), metadata={"crossemo_version": 1}), r"metadata's crossemo_version must be a version string"),
        (lambda: save_bundle(method, uri, metadata={}), r"already holds a model bundle; save to a new folder"),
        (lambda: save_bundle(fit(fast("fcnn", source_model=source), train), str(tmp_path / "g"), metadata={}), r"parameter 'source_model' of method 'fcnn' is a SourceFCNN, not a JSON value"),
    ]
    for call, message in cases:
        with pytest.raises(BundleError, match=message) as error:
            call()
        assert_one_line(error)
    assert not any((tmp_path / folder).exists() for folder in "abcdefg")
