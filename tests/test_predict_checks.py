"""``crossemo predict`` refuses what it cannot label well before any Ray work, and warns where labels mean little.

A bundle of the recommended kind of method (one that normalises each speaker
by their own recordings) is fitted here on features of real EMOVO speech,
without Ray; every refusal is checked as in :mod:`tests.test_early_errors`:
one line, exit status 2, Ray never started, nothing written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crossemo import audio, cli, featurestore, inputs, model_commands, orchestration, prediction, storage
from crossemo.bundle import RESERVED_KEYS, load_bundle, save_bundle
from crossemo.corpora import base
from crossemo.features.extractor import FeatureExtractor
from crossemo.labels import EMOTIONS
from tests.test_early_errors import empty_store, refuse
from tests.test_methods import fast

EMOVO_CODES = {"neu": "neutral", "rab": "anger", "gio": "joy", "tri": "sadness"}
SPEAKERS = ("f1", "m1")
PER_EMOTION = 2


@pytest.fixture(scope="module")
def model(shared_corpora, tmp_path_factory) -> Path:
    """A speaker_norm_linear bundle fitted on two EMOVO speakers, with the model.json entries ``crossemo train`` writes for predict."""
    extractor = FeatureExtractor("is10")
    settings = audio.AnalysisSettings()
    paths = [p for s in SPEAKERS for code in EMOVO_CODES for p in sorted((shared_corpora / "emovo" / s).glob(f"{code}-*.flac"))[:PER_EMOTION]]
    X = np.stack([extractor.extract(prepared.signal, prepared.sampling_rate) for prepared in (audio.load(str(p), settings=settings).analysis for p in paths)])
    y = np.array([EMOVO_CODES[p.name.split("-")[0]] for p in paths])
    speakers = np.array([p.parent.name for p in paths])
    method = fast("speaker_norm_linear").fit(X, y, is_target=np.ones(len(y), dtype=bool), speakers=speakers)
    uri = tmp_path_factory.mktemp("bundle") / "model"
    metadata = {
        "feature_set": "is10", "feature_set_id": extractor.feature_set_id, "feature_names": list(extractor.names),
        "decode": settings.key(), "classes": list(EMOTIONS), "method": "speaker_norm_linear",
    }
    save_bundle(method, str(uri), metadata=metadata)
    return uri


@pytest.fixture
def emovo_f2(shared_corpora) -> Path:
    return shared_corpora / "emovo" / "f2"


def predict(model: Path, audio_input: str, out: Path, *extra: str) -> list[str]:
    return ["predict", "--model", str(model), "--audio", audio_input, "--out", str(out), "--no-progress", *extra]


@pytest.mark.parametrize("empty", ["--model", "--out", "--audio", "--store"])
def test_an_empty_location_is_refused_not_taken_for_the_current_folder(empty, model, emovo_f2, tmp_path, capsys, monkeypatch):
    # The current folder holds audio, so an empty --audio would list it and an empty --out would write into it.
    shutil.copy(next(emovo_f2.glob("*.flac")), tmp_path / "call.flac")
    monkeypatch.chdir(tmp_path)
    args = predict(model, str(emovo_f2), tmp_path / "labels", "--store", str(tmp_path / "store"))
    args[args.index(empty) + 1] = ""
    refuse(args, capsys, says=f"{empty} is empty", untouched=tmp_path)


def resaved(model: Path, tmp_path: Path, change) -> Path:
    """The bundle's method saved again with model.json entries ``change`` altered, as a bundle saved through the API with such metadata would be."""
    loaded = load_bundle(str(model))
    metadata = {key: value for key, value in loaded.metadata.items() if key not in RESERVED_KEYS}
    change(metadata)
    copy = tmp_path / "resaved"
    save_bundle(loaded.method, str(copy), metadata=metadata)
    return copy


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda r: r.pop("decode"), "model.json lacks 'decode'"),
        (lambda r: r.pop("feature_names"), "model.json lacks 'feature_names'"),
        (lambda r: r.__setitem__("decode", "16000"), "its decode entry is not an object"),
        (lambda r: r["decode"].pop("channel"), "its decode rules lack 'channel'"),
        (lambda r: r["decode"].__setitem__("analysis_rate", "fast"), "its decode rules are unusable: analysis rate 'fast'"),
        (lambda r: r["decode"].__setitem__("channel", "left"), "its decode rules are unusable: channel 'left'"),
        (lambda r: r.__setitem__("feature_names", r["feature_names"][::-1]), "the feature names in model.json are not those of is10"),
        (lambda r: r.__setitem__("classes", r["classes"][::-1]), "its fitted method has ['neutral', 'anger', 'joy', 'sadness']; was it edited?"),
    ],
)
def test_a_model_json_missing_or_with_unusable_predict_entries_is_one_line(change, says, model, emovo_f2, tmp_path, capsys):
    refuse(predict(resaved(model, tmp_path, change), str(emovo_f2), tmp_path / "labels"), capsys, says=says, untouched=tmp_path)


@pytest.mark.parametrize(
    ("entry", "change", "done"),
    [
        ("decode", lambda r: r["decode"].__setitem__("analysis_rate", 8000), "changed"),
        ("decode", lambda r: r["decode"].__setitem__("channel", "first"), "changed"),
        ("feature_names", lambda r: r["feature_names"].__setitem__(0, "pcm_loudness"), "changed"),
        ("classes", lambda r: r.pop("classes"), "removed"),
    ],
)
def test_an_entry_that_decides_the_features_edited_in_model_json_is_refused(entry, change, done, model, emovo_f2, tmp_path, capsys):
    # Obeyed, it would label with rules the model was not trained under, under the same model id.
    copy = tmp_path / "edited"
    shutil.copytree(model, copy)
    record = json.loads((copy / "model.json").read_text())
    change(record)
    (copy / "model.json").write_text(json.dumps(record))
    refuse(predict(copy, str(emovo_f2), tmp_path / "labels"), capsys, says=f"its {entry!r} entry was {done} after the bundle was saved", untouched=tmp_path)


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--segment", "0.05"], "--segment 0.05 s is shorter than the shortest recording the model labels (0.1 s)"),
        (["--segment", "speech", "--max-length", "0.05"], "--max-length 0.05 s is shorter than the shortest recording"),
        (["--max-length", "5"], "--max-length applies to --segment speech only"),
        (["--segment", "3", "--max-length", "5"], "--max-length applies to --segment speech only"),
        (["--segment", "2", "--hop", "3"], "--segment: a hop of 3 s is longer than the 2 s windows: 1 s of audio between windows would be skipped"),
    ],
)
def test_windows_that_could_never_be_labelled_and_an_ignored_max_length_are_refused(flags, says, model, emovo_f2, tmp_path, capsys):
    refuse(predict(model, str(emovo_f2), tmp_path / "labels", *flags), capsys, says=says, untouched=tmp_path)


@pytest.mark.parametrize("column", ["emotion", "Emotion", "p_joy", "model_id", "windows", "input", "uri", "fingerprint"])
def test_a_table_column_that_predict_would_overwrite_is_refused(column, model, emovo_f2, tmp_path, capsys):
    files = sorted(emovo_f2.glob("*.flac"))[:4]
    table = tmp_path / "calls.csv"
    pd.DataFrame({"path": [str(p) for p in files], "speaker": "f2", column: "mine"}).to_csv(table, index=False)
    line = refuse(predict(model, str(table), tmp_path / "labels"), capsys, says="would be overwritten by crossemo's own", untouched=tmp_path)
    assert column.lower() in line


def test_adapt_to_errors_name_adapt_to(shared_corpora, tmp_path, capsys):
    args = ["train", "--corpus", f"emovo={shared_corpora}/emovo", "--corpus", f"ravdess={shared_corpora}/ravdess", "--target", "emovo",
            "--method", "self_training", "--store", str(tmp_path / "store"), "--out", str(tmp_path / "model"), "--no-progress"]
    refuse([*args, "--adapt-to", str(tmp_path / "nowhere")], capsys, says=f"--adapt-to {tmp_path / 'nowhere'} does not exist", untouched=tmp_path)
    refuse([*args, "--adapt-to", ""], capsys, says="--adapt-to is empty", untouched=tmp_path)


def test_adapt_to_audio_gets_the_speaker_pattern_and_warnings_predict_gives(shared_corpora, emovo_f2, tmp_path, capsys, monkeypatch):
    args = ["train", "--corpus", f"emovo={shared_corpora}/emovo", "--corpus", f"ravdess={shared_corpora}/ravdess", "--target", "emovo",
            "--method", "self_training", "--store", str(tmp_path / "store"), "--out", str(tmp_path / "model"), "--no-progress"]
    refuse([*args, "--speaker-pattern", "(?P<speaker>f2)"], capsys, says="--speaker-pattern names the speakers of --adapt-to audio; give --adapt-to too", untouched=tmp_path)
    table = tmp_path / "unlabelled.csv"
    pd.DataFrame({"path": [str(p) for p in sorted(emovo_f2.glob("*.flac"))[:2]] + [str(tmp_path / "gone.flac")]}).to_csv(table, index=False)

    def stop(*_args, **_kwargs):
        raise SystemExit("stopped before extraction")

    monkeypatch.setattr(orchestration, "extract_features", stop)
    with pytest.raises(SystemExit, match="stopped before extraction"):
        cli.main([*args, "--adapt-to", str(table)])
    err = capsys.readouterr().err
    # Unheard before: the unlabelled audio was normalised as one batch, and a missing row dropped, in silence.
    assert f"warning: no speaker for the files of {table}" in err
    assert f"warning: 1 file(s) --adapt-to lists cannot be read and are left out (for example {tmp_path / 'gone.flac'}: file not found)" in err
    setup = model_commands.train_setup(cli.build_parser().parse_args([*args, "--adapt-to", str(emovo_f2), "--speaker-pattern", r"/(?P<speaker>f\d)/"]), cli.config_from)
    assert set(setup.adapt_to.files["speaker"]) == {"f2"} and not setup.adapt_to.warnings


@pytest.mark.parametrize("method", ["rf", "speaker_norm_linear", "target_only_rf"])
def test_adapt_to_for_a_method_that_would_ignore_the_audio_is_refused(method, shared_corpora, emovo_f2, tmp_path, capsys):
    # Accepted, the audio would be extracted and then not used: the user believes the model adapted.
    args = ["train", "--corpus", f"emovo={shared_corpora}/emovo", "--corpus", f"ravdess={shared_corpora}/ravdess", "--target", "emovo",
            "--method", method, "--store", str(tmp_path / "store"), "--out", str(tmp_path / "model"), "--adapt-to", str(emovo_f2), "--no-progress"]
    refuse(args, capsys, says="does not learn from unlabelled audio; the methods that do: coral, dann,", untouched=tmp_path)


def test_the_single_file_warning_names_a_few_speakers_and_counts_the_rest():
    files = pd.DataFrame({"speaker": [f"s{n}" for n in range(7)] + ["pair", "pair"]})
    (warning,) = model_commands._lone_file_warnings(files, "speaker_norm_linear")
    assert warning.startswith("7 speaker(s) or batch(es) have a single file (s0, s1, s2, s3, s4 and 2 more): speaker_norm_linear normalises"), warning


def test_a_speaker_with_a_single_file_is_warned_about_as_normalising_it_leaves_nothing(model, emovo_f2, tmp_path):
    anger, sadness = (next(emovo_f2.glob(f"{code}-*.flac")) for code in ("rab", "tri"))
    table = tmp_path / "calls.csv"
    pd.DataFrame({"path": [str(anger), str(sadness)], "speaker": ["ann", "bob"]}).to_csv(table, index=False)
    setup = model_commands.predict_setup(cli.build_parser().parse_args(predict(model, str(table), tmp_path / "labels")))
    assert any("2 speaker(s) or batch(es) have a single file (ann, bob)" in w for w in setup.listing.warnings), setup.listing.warnings
    # What the warning says: an angry and a sad recording, each alone, get the very same probabilities.
    X = np.stack([setup.extractor.extract(a.signal, a.sampling_rate) for a in (audio.load(str(p), settings=setup.settings).analysis for p in (anger, sadness))])
    probabilities = setup.loaded.method.predict_proba(X, speakers=np.array(["ann", "bob"]))
    assert np.allclose(probabilities[0], probabilities[1])

    together = model_commands.predict_setup(cli.build_parser().parse_args(predict(model, str(emovo_f2), tmp_path / "labels")))
    assert not any("single file" in w for w in together.listing.warnings), together.listing.warnings


def test_a_blank_speaker_cell_costs_only_its_own_file_its_speaker(emovo_f2, tmp_path):
    files = sorted(emovo_f2.glob("*.flac"))[:6]
    table = tmp_path / "calls.csv"
    pd.DataFrame({"path": [str(p) for p in files], "speaker": ["ann", "ann", "", "bob", "bob", "bob"]}).to_csv(table, index=False)
    listing = inputs.list_inputs([str(table)])
    speakers = dict(zip(listing.files["uri"], listing.files["speaker"]))
    assert [speakers[str(p)] for p in files] == ["ann", "ann", str(table), "bob", "bob", "bob"]
    assert listing.speaker_rule == {str(table): "table"}
    assert any("1 file(s) of" in w and "blank speaker cell" in w for w in listing.warnings), listing.warnings

    # With a pattern, the blank cell takes the speaker the pattern finds in its path.
    listing = inputs.list_inputs([str(table)], speaker_pattern=r"/(?P<speaker>f\d)/")
    speakers = dict(zip(listing.files["uri"], listing.files["speaker"]))
    assert [speakers[str(p)] for p in files] == ["ann", "ann", "f2", "bob", "bob", "bob"]


def test_a_file_that_cannot_be_read_is_rejected_with_the_speaker_its_path_names(emovo_f2, tmp_path):
    folder = tmp_path / "calls" / "f7"
    folder.mkdir(parents=True)
    (folder / "take.flac").write_bytes(sorted(emovo_f2.glob("*.flac"))[0].read_bytes())
    (folder / "gone.flac").symlink_to(tmp_path / "nowhere.flac")
    listing = inputs.list_inputs([str(tmp_path / "calls")], speaker_pattern=r"/(?P<speaker>f\d)/")
    assert listing.missing[["uri", "speaker"]].to_dict("records") == [{"uri": str(folder / "gone.flac"), "speaker": "f7"}]


def test_speaker_fallbacks_are_warned_of_only_for_a_model_that_normalises_per_speaker(emovo_f2, tmp_path):
    """A model that labels each file alone loses nothing when speakers are guessed: no warning to act on."""
    files = sorted(emovo_f2.glob("*.flac"))[:4]
    table = tmp_path / "calls.csv"
    pd.DataFrame({"path": [str(p) for p in files], "speaker": ["ann", "", "bob", "bob"]}).to_csv(table, index=False)
    inputs_given = [str(table), str(emovo_f2)]
    pattern = r"/(?P<speaker>f2)/gio-"  # some of the folder's files only
    warned = inputs.list_inputs(inputs_given, speaker_pattern=pattern)
    quiet = inputs.list_inputs(inputs_given, speaker_pattern=pattern, speakers_matter=False)
    assert [w.split(" ")[2:5] for w in warned.warnings if "speaker" in w] == [["of", str(table), "have"], ["of", str(emovo_f2), "do"]], warned.warnings
    assert not any("speaker" in w for w in quiet.warnings), quiet.warnings
    pd.testing.assert_frame_equal(warned.files, quiet.files)
    batch = inputs.list_inputs([str(emovo_f2)])
    assert any("no speaker for the files of" in w for w in batch.warnings)
    assert not inputs.list_inputs([str(emovo_f2)], speakers_matter=False).warnings


def test_speaker_ids_that_differ_only_in_spelling_are_warned_of_when_speakers_are_normalised(emovo_f2, tmp_path):
    files = sorted(emovo_f2.glob("*.flac"))[:4]
    table = tmp_path / "calls.csv"
    pd.DataFrame({"path": [str(p) for p in files[:2]], "speaker": ["3", "Ann"]}).to_csv(table, index=False)
    other = tmp_path / "more.csv"
    pd.DataFrame({"path": [str(p) for p in files[2:]], "speaker": ["03", "3"]}).to_csv(other, index=False)
    warned = inputs.list_inputs([str(table), str(other)])
    assert warned.warnings == ["speakers '3' and '03' differ only in spelling; they are treated as different speakers"]
    assert not inputs.list_inputs([str(table), str(other)], speakers_matter=False).warnings


def test_a_file_given_by_its_relative_path_and_in_its_folder_is_listed_once(emovo_f2, monkeypatch):
    monkeypatch.chdir(emovo_f2.parent)
    files = sorted(emovo_f2.glob("*.flac"))
    listing = inputs.list_inputs([f"f2/{files[0].name}", str(emovo_f2)])
    assert sorted(listing.files["uri"]) == sorted(str(p) for p in files)
    assert any("given by more than one --audio are labelled once" in w for w in listing.warnings), listing.warnings


@pytest.mark.parametrize("kind", ["folder", "table"])
def test_an_input_that_lists_no_audio_beside_others_that_do_is_refused(kind, model, emovo_f2, tmp_path, capsys):
    """An empty daily folder (or a table of headers alone) beside a full one is a mistake, named, not a silent nothing (a new user's trial)."""
    empty = tmp_path / "today"
    if kind == "folder":
        empty.mkdir()
    else:
        empty = tmp_path / "today.csv"
        empty.write_text("path,speaker\n")
    args = [*predict(model, str(emovo_f2), tmp_path / "labels"), "--audio", str(empty)]
    refuse(args, capsys, says=f"--audio {empty} lists no audio file", untouched=tmp_path)


def test_a_file_that_is_neither_audio_nor_a_table_is_named_as_such(model, emovo_f2, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("not audio")
    refuse(predict(model, str(notes), tmp_path / "labels"), capsys, says=f"--audio {notes} is a file whose name marks neither audio (.wav, .wave, .flac …) nor a table", untouched=tmp_path)


def test_a_table_whose_files_are_all_missing_says_so(model, tmp_path, capsys):
    table = tmp_path / "calls.csv"
    pd.DataFrame({"path": [str(tmp_path / "gone-1.wav"), str(tmp_path / "gone-2.wav")]}).to_csv(table, index=False)
    message = refuse(predict(model, str(table), tmp_path / "labels"), capsys, says="none of the 2 audio file(s) --audio lists can be read", untouched=tmp_path)
    assert "gone-1.wav" in message and "path column" not in message, message


def test_a_missing_file_keeps_the_speaker_its_table_gives(emovo_f2, tmp_path):
    """Its rejection row names whose recording is missing."""
    table = tmp_path / "calls.csv"
    pd.DataFrame({"path": [str(sorted(emovo_f2.glob("*.flac"))[0]), str(tmp_path / "gone.wav")], "speaker": ["f2", "m9"]}).to_csv(table, index=False)
    listing = inputs.list_inputs([str(table)])
    assert listing.missing[prediction.REJECTED_COLUMNS].to_dict("records") == [{"uri": str(tmp_path / "gone.wav"), "speaker": "m9", "stage": "read", "reason": "file not found"}]


def test_a_table_of_paths_alone_is_read(emovo_f2, tmp_path):
    files = sorted(emovo_f2.glob("*.flac"))[:3]
    table = tmp_path / "calls.csv"
    table.write_text("path\n" + "".join(f"{p}\n" for p in files))
    assert list(inputs.list_inputs([str(table)]).files["uri"]) == [str(p) for p in files]


@pytest.mark.parametrize("flag, where", [("--out", "model"), ("--out", "model/labels"), ("--store", "model/store"), ("--out", "link/labels")])
def test_an_output_inside_the_model_bundle_is_refused(flag, where, model, emovo_f2, tmp_path, capsys):
    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    (tmp_path / "link").symlink_to(copy)  # the bundle's folder by another name
    args = predict(copy, str(emovo_f2), tmp_path / "labels")
    if flag == "--out":
        args[args.index("--out") + 1] = str(tmp_path / where)
    else:
        args += [flag, str(tmp_path / where)]
    refuse(args, capsys, says=f"{flag} {tmp_path / where} lies inside the model bundle", untouched=tmp_path)


@pytest.mark.parametrize("inside", ["features", "cache/features"])
def test_an_out_inside_the_feature_stores_folders_is_refused(inside, model, emovo_f2, tmp_path, capsys):
    store = tmp_path / "run"
    (store / "features").mkdir(parents=True)
    args = predict(model, str(emovo_f2), store / inside / "labels", "--store", str(store))
    refuse(args, capsys, says=f"lies inside the feature store's {inside.split('/')[0]} folder", untouched=tmp_path)


@pytest.mark.parametrize("inside", ["features", "cache/x"])
def test_an_out_inside_a_runs_store_is_refused_without_store_given(inside, model, emovo_f2, tmp_path, capsys):
    """Labels in a run's features/ would be read back as labelled feature rows of no corpus."""
    run = empty_store(tmp_path / "run")
    refuse(predict(model, str(emovo_f2), run / inside / "labels"), capsys, says=f"lies inside the {inside.split('/')[0]} folder of the feature store {run}", untouched=tmp_path)


def test_folders_named_cache_or_features_outside_a_store_are_not_taken_for_one(tmp_path):
    for folder in ("var/cache", "project/cache", "project/features"):
        (tmp_path / folder).mkdir(parents=True)
    for out in ("var/cache/crossemo/labels", "project/features/emotions", "project/cache/labels"):
        assert featurestore.store_folder_holding(str(tmp_path / out), storage_options=None) is None, out


def _part(rows: list[dict], *, rule: str = "whole files") -> prediction.Part:
    """A part as read back from its footer: the files it records, keyed as crossemo keys them."""
    files = pd.DataFrame(rows)
    return prediction.Part(f"out/predictions/part-{len(rows)}.parquet", prediction.shard_key(files, model_id="m", rule=rule), files, pd.DataFrame(columns=prediction.REJECTED_COLUMNS), rule)


def _rows(*names: str, speaker: str = "s1", **extra: str) -> list[dict]:
    return [{"uri": f"/d/{name}.wav", "fingerprint": f"{index}:1", "speaker": speaker, "input": "/d", **extra} for index, name in enumerate(names)]


@pytest.mark.parametrize("per_speaker", [False, True])
def test_a_part_whose_listed_files_are_unchanged_stays_valid_when_some_are_not_listed(per_speaker):
    """A folder a file was removed from, or a table of part of a folder: the part keeps every label and nothing is relabelled."""
    part = _part(_rows("a", "b", "c", "d"))
    listed = pd.DataFrame(_rows("a", "b", "c", "d")).iloc[[0, 2]]
    valid, stale = prediction.still_valid([part], listed, model_id="m", rule="whole files", per_speaker=per_speaker)
    assert (valid, stale) == ([part], [])
    changed = listed.assign(fingerprint=["0:1", "9:9"])
    assert prediction.still_valid([part], changed, model_id="m", rule="whole files", per_speaker=per_speaker) == ([], [part])
    assert prediction.still_valid([part], listed, model_id="other", rule="whole files", per_speaker=per_speaker) == ([], [part])


def test_a_new_recording_of_a_speaker_outside_their_part_makes_it_stale_when_speakers_normalise():
    part = _part(_rows("a", "b", "c"))
    listed = pd.DataFrame(_rows("a", "b", "new"))
    assert prediction.still_valid([part], listed, model_id="m", rule="whole files", per_speaker=True) == ([], [part])
    assert prediction.still_valid([part], listed, model_id="m", rule="whole files", per_speaker=False) == ([part], [])


def test_a_part_whose_columns_are_not_the_listings_is_stale_not_an_error():
    """A table's extra column in the part but not in a folder's listing (and the other way round) relabels the part; it used to raise KeyError."""
    with_session = _part(_rows("a", "b", session="x"))
    folder = pd.DataFrame(_rows("a", "b"))
    assert prediction.still_valid([with_session], folder, model_id="m", rule="whole files", per_speaker=False) == ([], [with_session])
    without = _part(_rows("a", "b"))
    table = pd.DataFrame(_rows("a", "b", session="x"))
    assert prediction.still_valid([without], table, model_id="m", rule="whole files", per_speaker=False) == ([], [without])


def test_a_part_that_could_not_read_a_listed_file_is_labelled_again_one_that_could_not_decode_it_is_kept():
    """A read error may pass (a storage hiccup, a permission fixed without touching the file); a decode error does not."""
    listed = pd.DataFrame(_rows("a", "b"))
    parts = {stage: dataclasses.replace(_part(_rows("a", "b")), rejected=pd.DataFrame([{"uri": "/d/b.wav", "speaker": "s1", "stage": stage, "reason": "x"}])) for stage in ("read", "decode")}
    assert prediction.still_valid([parts["read"]], listed, model_id="m", rule="whole files", per_speaker=False) == ([], [parts["read"]])
    assert prediction.still_valid([parts["decode"]], listed, model_id="m", rule="whole files", per_speaker=False) == ([parts["decode"]], [])
    # Not listed this run: nothing to try again, the part stays.
    assert prediction.still_valid([parts["read"]], listed.iloc[[0]], model_id="m", rule="whole files", per_speaker=False) == ([parts["read"]], [])


def test_two_valid_parts_sharing_a_file_are_both_stale():
    """What a run killed between writing a part and removing the one it replaced leaves: a file must not get two rows."""
    old, new = _part(_rows("a", "b")), _part(_rows("a", "b", "c"))
    listed = pd.DataFrame(_rows("a", "b"))
    assert prediction.still_valid([old, new], listed, model_id="m", rule="whole files", per_speaker=False) == ([], [old, new])
    other = _part(_rows("d", speaker="s2"))
    listed = pd.concat([listed, pd.DataFrame(_rows("d", speaker="s2"))], ignore_index=True)
    assert prediction.still_valid([old, other, new], listed, model_id="m", rule="whole files", per_speaker=False) == ([other], [old, new])


def _written_part(folder: Path, name: str, frame: pd.DataFrame) -> Path:
    """A part file as a labelling task writes it: its rows, and the files it covers in its metadata."""
    path = folder / f"{prediction.PART_PREFIX}{name}.parquet"
    storage.write_frame(frame, str(path), metadata={prediction.FILES_KEY.decode(): frame[["uri"]].to_json(orient="records")})
    return path


def test_parts_written_with_other_columns_read_back_as_one_table(tmp_path):
    folder = tmp_path / "predictions"
    # Arrow would take the folder's columns from part "a" and drop call_id.
    _written_part(folder, "a", pd.DataFrame({"uri": ["x", "y"], "emotion": ["joy", "anger"], "p_joy": [0.7, 0.1]}))
    _written_part(folder, "b", pd.DataFrame({"uri": ["z"], "call_id": ["101"], "emotion": ["joy"], "p_joy": [0.9]}))
    assert prediction.align_columns(str(folder), predictions=str(folder)) == 1
    labels = pd.read_parquet(folder).sort_values("uri").reset_index(drop=True)
    assert list(labels["uri"]) == ["x", "y", "z"] and labels["call_id"].isna().tolist() == [True, True, False] and labels["call_id"][2] == "101"
    # Every part's record of its files is kept, so whether it is still valid does not change.
    assert [len(part.files) for part in prediction.read_parts(str(folder))] == [2, 1]
    assert prediction.align_columns(str(folder), predictions=str(folder)) == 0


def test_a_part_whose_column_cannot_take_the_common_type_is_left_as_it_is(tmp_path):
    folder = tmp_path / "predictions"
    _written_part(folder, "a", pd.DataFrame({"uri": ["x"], "note": ["text"]}))
    b = _written_part(folder, "b", pd.DataFrame({"uri": ["y"], "note": [[1, 2]]}))  # a list cannot become text
    before = b.read_bytes()
    prediction.align_columns(str(folder), predictions=str(folder))
    assert b.read_bytes() == before


def test_parts_a_killed_run_left_sharing_a_file_are_not_rewritten(tmp_path):
    # Which of them holds the file's newest label is told by when each was written.
    folder = tmp_path / "predictions"
    a = _written_part(folder, "a", pd.DataFrame({"uri": ["x", "y"], "emotion": ["joy", "joy"]}))
    b = _written_part(folder, "b", pd.DataFrame({"uri": ["y"], "emotion": ["anger"], "call_id": ["7"]}))
    c = _written_part(folder, "c", pd.DataFrame({"uri": ["z"], "emotion": ["anger"]}))
    before = {path: path.stat().st_mtime_ns for path in (a, b)}
    assert prediction.align_columns(str(folder), predictions=str(folder)) == 1
    assert {path: path.stat().st_mtime_ns for path in (a, b)} == before and "call_id" in pq.read_schema(c).names


def test_a_file_named_in_bytes_that_are_not_utf8_is_rejected_and_the_others_listed(emovo_f2, tmp_path):
    # Python hands such a name over with lone surrogates, which no Parquet text
    # column can hold: one of them made the whole listing fail with a traceback.
    folder = tmp_path / "calls"
    folder.mkdir()
    good = sorted(emovo_f2.glob("*.flac"))[0]
    shutil.copy(good, folder / "ok.flac")
    shutil.copy(good, os.fsdecode(os.fsencode(str(folder)) + b"/caf\xe9.flac"))
    listing = inputs.list_inputs([str(folder)])
    assert list(listing.files["uri"]) == [str(folder / "ok.flac")]
    assert listing.missing[["uri", "reason"]].to_dict("records") == [{"uri": f"{folder}/caf\\xe9.flac", "reason": base.NAME_NOT_UTF8}]
    storage.write_frame(listing.missing, str(tmp_path / "rejected.parquet"))  # the rejection can be written
    # A corpus lists it the same way.
    files, broken = base.list_audio(str(folder))
    assert [uri for uri, _, _ in files] == [str(folder / "ok.flac")] and [row["uri"] for row in broken] == [f"{folder}/caf\\xe9.flac"]
    # Given itself (or a folder so named), it is one line naming it: its name would be the input's id in every output.
    for given in (os.fsdecode(os.fsencode(str(folder)) + b"/caf\xe9.flac"), os.fsdecode(os.fsencode(str(tmp_path)) + b"/\xff")):
        with pytest.raises(inputs.InputError) as refused:
            inputs.list_inputs([str(folder), given])
        assert str(refused.value) == f"--audio {base.shown(given)}: {base.NAME_NOT_UTF8}"


def test_one_file_has_one_uri_and_one_input_id_however_its_folder_is_spelled(emovo_f2, tmp_path, monkeypatch):
    folder = tmp_path / "calls"
    (folder / "ann").mkdir(parents=True)
    for source in sorted(emovo_f2.glob("*.flac"))[:2]:
        shutil.copy(source, folder / "ann" / source.name)
    monkeypatch.chdir(tmp_path)
    listing = inputs.list_inputs(["calls", "calls//ann", "calls/../calls", "./calls/ann/"])
    assert sorted(listing.files["uri"]) == sorted(str(p) for p in (folder / "ann").iterdir())
    # The input and its batch, part of every shard key: how the folder was written must not relabel it.
    ids = [inputs.list_inputs([given], speakers_matter=False).files[["input", "speaker"]].drop_duplicates().values.tolist() for given in ("calls", "./calls/", str(folder))]
    assert ids == [[[str(folder), str(folder)]]] * 3


def test_a_missing_file_two_tables_list_is_one_rejection(emovo_f2, tmp_path):
    gone = str(tmp_path / "gone.wav")
    for name in ("a.csv", "b.csv"):
        pd.DataFrame({"path": [str(sorted(emovo_f2.glob("*.flac"))[0 if name == "a.csv" else 1]), gone]}).to_csv(tmp_path / name, index=False)
    listing = inputs.list_inputs([str(tmp_path / "a.csv"), str(tmp_path / "b.csv")])
    assert len(listing.files) == 2 and listing.missing["uri"].tolist() == [gone]


def test_whole_numbers_of_a_parquet_table_stay_whole_where_a_cell_is_blank(emovo_f2, tmp_path):
    files = sorted(emovo_f2.glob("*.flac"))[:3]
    table = pa.table({"path": [str(p) for p in files], "speaker": pa.array([1, 2, None], pa.int64()), "call_id": pa.array([12345678901234567, None, 3], pa.int64())})
    pq.write_table(table, tmp_path / "calls.parquet")
    listing = inputs.list_inputs([str(tmp_path / "calls.parquet")], speakers_matter=False)
    assert listing.files["speaker"].tolist()[:2] == ["1", "2"]
    assert listing.files["call_id"].tolist() == ["12345678901234567", "", "3"]
