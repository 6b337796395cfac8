"""Corpus recipes: generated trees in each corpus's exact layout, the real EMOVO and RAVDESS, S3, manifests and parser properties."""

from __future__ import annotations

import io
import os
import posixpath
import re
import tempfile
from collections import Counter
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from crossemo.corpora import RECIPES, CorpusError, Manifest, prepare
from crossemo.corpora import base, emodb, emovo, iemocap, manifest, ravdess, savee
from crossemo.corpora.base import Skip, Utterance, fingerprint
from crossemo.labels import EMOTIONS, MANIFEST_COLUMNS

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- helpers


@cache
def _audio_bytes(kind: str) -> bytes:
    """A real 10 ms, 16 kHz, 16-bit mono recording encoded as WAV or FLAC."""
    buffer = io.BytesIO()
    samples = (np.sin(np.arange(160) / 3.0) * 3000).astype(np.int16)
    sf.write(buffer, samples, 16000, format=kind, subtype="PCM_16")
    return buffer.getvalue()


def _write_audio(path: Path) -> Path:
    """Write a small real recording whose format follows the suffix (any case)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_audio_bytes("FLAC" if path.suffix.lower() == ".flac" else "WAV"))
    return path


def _write_text(path: Path, text: str, newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.replace("\n", newline).encode())
    return path


def _reasons(result: Manifest) -> Counter:
    return Counter(result.skipped["reason"])


def _emotion_counts(result: Manifest) -> dict[str, int]:
    return result.utterances["emotion"].value_counts().to_dict()


def _check_frame(result: Manifest, corpus: str) -> None:
    """What every manifest promises: the columns, one corpus name, valid emotions, unique URIs."""
    assert list(result.utterances.columns) == [*MANIFEST_COLUMNS, "fingerprint"]
    assert list(result.skipped.columns) == ["uri", "corpus", "reason"]
    assert set(result.utterances["corpus"]) == {corpus}
    assert set(result.utterances["emotion"]) <= set(EMOTIONS)
    assert result.utterances["uri"].is_unique
    assert (result.utterances["fingerprint"].str.len() > 1).all()
    assert (result.skipped["reason"].str.len() > 0).all()


# --------------------------------------------------------------------------- EmoDB

EMODB_COUNTS = {"N": 79, "W": 127, "F": 71, "T": 62, "L": 81, "E": 46, "A": 69}
"""Utterances per emotion code in the real EmoDB (535 in all)."""


def _emodb_names() -> list[str]:
    """535 distinct names ``SSTTTEV.wav`` at EmoDB's real per-emotion counts."""
    names = []
    for code, count in EMODB_COUNTS.items():
        for i in range(count):
            speaker = emodb.SPEAKERS[i % 10]
            text = emodb.TEXTS[(i // 10) % 10]
            version = "abcdefg"[i // 100]
            names.append(f"{speaker}{text}{code}{version}.wav")
    return names


@pytest.fixture(scope="module")
def emodb_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("emodb")
    for name in _emodb_names():
        _write_audio(root / "wav" / name)
    _write_text(root / "lablaut" / "03a01Fa.lablaut", "0.0 0.1 a\n")
    _write_text(root / "silb" / "03a01Fa.silb", "0.0 0.1 a\n")
    _write_text(root / "wav" / "README.txt", "EmoDB copy\n")
    _write_audio(root / "wav" / "01a01Wa.wav")  # speaker 01 is not in EmoDB
    _write_audio(root / "wav" / "03a01Xa.wav")  # no emotion X
    _write_audio(root / "wav" / "03a01Wa copy.wav")
    return root


def test_emodb_full_counts(emodb_tree):
    result = emodb.prepare_emodb(str(emodb_tree))
    _check_frame(result, "emodb")
    assert _emotion_counts(result) == {"neutral": 79, "anger": 127, "joy": 71, "sadness": 62}
    assert len(result.utterances) == 339
    assert sorted(result.utterances["speaker"].unique()) == list(emodb.SPEAKERS)
    assert set(result.utterances["label"]) == {"N", "W", "F", "T"}
    reasons = _reasons(result)
    assert reasons["emotion L (boredom) is not one of the four classes"] == 81
    assert reasons["emotion E (disgust) is not one of the four classes"] == 46
    assert reasons["emotion A (fear) is not one of the four classes"] == 69
    assert reasons["unknown EmoDB emotion code 'X'"] == 1
    assert sum(1 for reason in reasons.elements() if reason.startswith("unknown EmoDB speaker '01'")) == 1
    assert sum(1 for reason in reasons.elements() if reason.startswith("file name does not follow EmoDB")) == 1
    assert len(result.skipped) == 81 + 46 + 69 + 3  # the .txt and label files are not audio, so not listed
    assert result.counts().to_numpy().sum() == 339


def test_emodb_flat_layout(tmp_path):
    for name in ("03a01Fa.wav", "16b10Wb.wav", "08a02Ta.wav", "09b03Nc.wav", "10a04La.wav"):
        _write_audio(tmp_path / name)
    result = emodb.prepare_emodb(str(tmp_path))
    assert dict(zip(result.utterances["label"], result.utterances["speaker"])) == {"F": "03", "W": "16", "T": "08", "N": "09"}
    assert len(result.skipped) == 1


# --------------------------------------------------------------------------- SAVEE

SAVEE_CODES = {"n": 30, "a": 15, "d": 15, "f": 15, "h": 15, "sa": 15, "su": 15}


@pytest.fixture(scope="module")
def savee_trees(tmp_path_factory) -> tuple[Path, Path]:
    """The distribution's ``AudioData/<SPK>/`` layout and the flat ``<SPK>_<code><nn>`` copy, 480 files each."""
    nested, flat = tmp_path_factory.mktemp("savee-nested"), tmp_path_factory.mktemp("savee-flat")
    for speaker in savee.SPEAKERS:
        for code, count in SAVEE_CODES.items():
            for number in range(1, count + 1):
                _write_audio(nested / "AudioData" / speaker / f"{code}{number:02d}.wav")
                _write_audio(flat / "ALL" / f"{speaker}_{code}{number:02d}.wav")
        _write_text(nested / "AudioData" / speaker / "Info.txt", "SAVEE\n")
    _write_audio(nested / "AudioData" / "a01.wav")  # no speaker folder
    _write_audio(nested / "AudioData" / "XY" / "a01.wav")  # not a SAVEE speaker
    _write_audio(flat / "ALL" / "XY_a01.wav")
    _write_audio(flat / "ALL" / "DC_x01.wav")
    return nested, flat


def test_savee_nested_full_counts(savee_trees):
    result = savee.prepare_savee(str(savee_trees[0]))
    _check_frame(result, "savee")
    assert _emotion_counts(result) == {"neutral": 120, "anger": 60, "joy": 60, "sadness": 60}
    counts = result.counts()
    assert list(counts.index) == list(savee.SPEAKERS)
    assert counts.loc["JK"].to_dict() == {"neutral": 30, "anger": 15, "joy": 15, "sadness": 15}
    reasons = _reasons(result)
    for code, name in (("d", "disgust"), ("f", "fear"), ("su", "surprise")):
        assert reasons[f"emotion {code} ({name}) is not one of the four classes"] == 60
    assert reasons["SAVEE file is not in a speaker folder (DC, JE, JK, KL)"] == 2
    assert len(result.skipped) == 182


def test_savee_flat_matches_nested(savee_trees):
    nested = savee.prepare_savee(str(savee_trees[0]))
    flat = savee.prepare_savee(str(savee_trees[1]))
    _check_frame(flat, "savee")
    key = ["speaker", "emotion", "label"]
    assert Counter(map(tuple, flat.utterances[key].to_numpy())) == Counter(map(tuple, nested.utterances[key].to_numpy()))
    reasons = _reasons(flat)
    assert reasons["unknown SAVEE speaker 'XY' (SAVEE has DC, JE, JK, KL)"] == 1
    assert reasons["unknown SAVEE emotion code 'x'"] == 1
    assert len(flat.skipped) == 180 + 2


# --------------------------------------------------------------------------- IEMOCAP

IEMOCAP_LABELS = {
    "Session1": {
        "Ses01F_impro01": [
            ("Ses01F_impro01_F000", "neu"),
            ("Ses01F_impro01_M000", "ang"),
            ("Ses01F_impro01_F001", "hap"),
            ("Ses01F_impro01_M001", "sad"),
            ("Ses01F_impro01_F002", "exc"),
            ("Ses01F_impro01_M002", "fru"),
            ("Ses01F_impro01_F003", "xxx"),
            ("Ses01F_impro01_M003", "neu"),  # labelled, but its recording is missing
        ],
        "Ses01M_script01_1": [
            ("Ses01M_script01_1_F000", "sur"),
            ("Ses01M_script01_1_M000", "exc"),
            ("Ses01M_script01_1_M001", "ang"),
        ],
    },
    "Session2": {
        "Ses02F_impro05a": [
            ("Ses02F_impro05a_F000", "sad"),
            ("Ses02F_impro05a_M000", "hap"),
            ("Ses02F_impro05a_M001", "oth"),
            ("Ses02F_impro05a_F001", "neu"),
        ],
    },
}


def _label_file(turns: list[tuple[str, str]]) -> str:
    lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
    for index, (turn, code) in enumerate(turns):
        start = 1.5 + 4 * index
        lines.append(f"[{start:.4f} - {start + 2.25:.4f}]\t{turn}\t{code}\t[2.5000, 3.0000, 2.5000]")
        lines.append("C-E1:\tNeutral;\t()")
        lines.append("A-E1:\tval 3; act 2; dom  2;\t()")
        lines.append("")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def iemocap_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("iemocap") / "IEMOCAP_full_release"
    for session, dialogs in IEMOCAP_LABELS.items():
        for dialog, turns in dialogs.items():
            newline = "\r\n" if session == "Session2" else "\n"
            _write_text(root / session / "dialog" / "EmoEvaluation" / f"{dialog}.txt", _label_file(turns), newline)
            _write_text(root / session / "dialog" / "EmoEvaluation" / "Categorical" / f"{dialog}_e1_cat.txt", f"{turns[0][0]} :Neutral state; ()\n")
            _write_text(root / session / "dialog" / "transcriptions" / f"{dialog}.txt", f"{turns[0][0]} [001.5-003.7]: Hello.\n")
            _write_audio(root / session / "dialog" / "wav" / f"{dialog}.wav")  # the whole dialog: not a turn
            for turn, _ in turns:
                if turn == "Ses01F_impro01_M003":
                    continue
                suffix = ".FLAC" if turn == "Ses02F_impro05a_F001" else ".wav"
                _write_audio(root / session / "sentences" / "wav" / dialog / f"{turn}{suffix}")
    _write_audio(root / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_F004.wav")  # no label line
    _write_audio(root / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / "notes.wav")
    (root / "Session3" / "dialog" / "EmoEvaluation").mkdir(parents=True)  # an empty session
    (root / "Documentation").mkdir()
    return root


def test_iemocap_without_merge(iemocap_tree):
    result = iemocap.prepare_iemocap(str(iemocap_tree))
    _check_frame(result, "iemocap")
    rows = {Path(uri).stem: (speaker, emotion, label) for uri, speaker, emotion, label in result.utterances[["uri", "speaker", "emotion", "label"]].to_numpy()}
    assert rows == {
        "Ses01F_impro01_F000": ("Ses01_F", "neutral", "neu"),
        "Ses01F_impro01_M000": ("Ses01_M", "anger", "ang"),
        "Ses01F_impro01_F001": ("Ses01_F", "joy", "hap"),
        "Ses01F_impro01_M001": ("Ses01_M", "sadness", "sad"),
        "Ses01M_script01_1_M001": ("Ses01_M", "anger", "ang"),
        "Ses02F_impro05a_F000": ("Ses02_F", "sadness", "sad"),
        "Ses02F_impro05a_M000": ("Ses02_M", "joy", "hap"),
        "Ses02F_impro05a_F001": ("Ses02_F", "neutral", "neu"),
    }
    reasons = {Path(uri).stem: reason for uri, reason in result.skipped[["uri", "reason"]].to_numpy()}
    assert reasons["Ses01F_impro01_F002"] == "emotion exc (excited) is not one of the four classes; pass merge_excited=True to count it as joy"
    assert reasons["Ses01M_script01_1_M000"].startswith("emotion exc (excited)")
    assert reasons["Ses01F_impro01_M002"] == "emotion fru (frustration) is not one of the four classes"
    assert reasons["Ses01F_impro01_F003"] == "emotion xxx (no majority among the evaluators) is not one of the four classes"
    assert reasons["Ses01M_script01_1_F000"] == "emotion sur (surprise) is not one of the four classes"
    assert reasons["Ses02F_impro05a_M001"] == "emotion oth (other) is not one of the four classes"
    assert reasons["Ses01F_impro01_F004"] == "no label line for this turn in the EmoEvaluation files"
    assert reasons["notes"].startswith("file name does not follow IEMOCAP")
    assert reasons["Ses01F_impro01_M003"] == "labelled turn has no audio file"
    missing = result.skipped.loc[result.skipped["reason"] == iemocap.MISSING_AUDIO, "uri"].tolist()
    assert missing == [str(iemocap_tree / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_M003.wav")]
    assert len(result.skipped) == 9  # whole-dialog recordings are not turns and are not listed
    assert not any("/dialog/wav/" in uri for uri in [*result.utterances["uri"], *result.skipped["uri"]])


def test_iemocap_merge_excited(iemocap_tree):
    result = prepare("iemocap", str(iemocap_tree), merge_excited=True)
    excited = result.utterances[result.utterances["label"] == "exc"]
    assert sorted(zip(excited["speaker"], excited["emotion"])) == [("Ses01_F", "joy"), ("Ses01_M", "joy")]
    assert _emotion_counts(result) == {"joy": 4, "neutral": 2, "anger": 2, "sadness": 2}
    assert not any(reason.startswith("emotion exc") for reason in result.skipped["reason"])


def test_iemocap_read_labels(iemocap_tree):
    labels = iemocap.read_labels(str(iemocap_tree))
    assert len(labels) == 15
    assert labels["Ses02F_impro05a_F001"] == ("neu", "Session2")
    assert labels["Ses01F_impro01_M003"] == ("neu", "Session1")


def test_iemocap_without_sessions(tmp_path):
    _write_audio(tmp_path / "Ses01F_impro01_F000.wav")
    with pytest.raises(CorpusError, match="has no Session1"):
        iemocap.prepare_iemocap(str(tmp_path))


# --------------------------------------------------------------------------- real EMOVO and RAVDESS


def test_real_emovo(shared_corpora):
    result = emovo.prepare_emovo(str(shared_corpora / "emovo"))
    _check_frame(result, "emovo")
    assert len(result.utterances) == 336
    assert _emotion_counts(result) == {"neutral": 84, "anger": 84, "joy": 84, "sadness": 84}
    assert sorted(result.utterances["speaker"].unique()) == ["f1", "f2", "f3", "m1", "m2", "m3"]
    assert (result.counts() == 14).all().all()
    assert result.skipped.empty
    assert result.utterances["uri"].str.endswith(".flac").all()


def test_real_ravdess(shared_corpora):
    result = ravdess.prepare_ravdess(str(shared_corpora / "ravdess"))
    _check_frame(result, "ravdess")
    assert len(result.utterances) == 671
    assert _emotion_counts(result) == {"neutral": 96, "joy": 191, "sadness": 192, "anger": 192}
    assert sorted(result.utterances["speaker"].unique()) == [f"{n:02d}" for n in range(1, 25)]
    counts = result.counts()
    assert counts.loc["20"].to_dict() == {"neutral": 4, "anger": 8, "joy": 7, "sadness": 8}
    assert (counts.drop(index="20")[["anger", "joy", "sadness"]] == 8).all().all()
    assert (counts["neutral"] == 4).all()
    assert result.skipped.empty


# --------------------------------------------------------------------------- extensions, roots, registry

MIXED_NAMES = {
    "emodb": ["wav/03a01Wa.wav", "wav/08a02Fb.flac", "wav/09b01Na.WAV", "wav/10b10Ta.FLAC"],
    "emovo": ["f1/rab-f1-b1.wav", "f2/gio-f2-b1.flac", "m1/neu-m1-b1.WAV", "m3/tri-m3-b1.FLAC"],
    "ravdess": ["Actor_01/03-01-05-01-01-01-01.wav", "Actor_02/03-01-03-02-01-01-02.flac", "Actor_03/03-01-01-01-02-01-03.WAV", "Actor_04/03-01-04-01-01-02-04.FLAC"],
    "savee": ["AudioData/DC/a01.wav", "AudioData/JE/h02.flac", "AudioData/JK/n03.WAV", "KL_sa04.FLAC"],
}


@pytest.mark.parametrize("name", sorted(MIXED_NAMES))
def test_wav_and_flac_in_any_case(tmp_path, name):
    for relative in MIXED_NAMES[name]:
        _write_audio(tmp_path / relative)
    _write_audio(tmp_path / "stray.ogg")
    _write_text(tmp_path / "notes.txt", "not audio, not listed\n")
    result = prepare(name, str(tmp_path))
    assert sorted(result.utterances["emotion"]) == sorted(EMOTIONS)
    assert sorted(Path(uri).relative_to(tmp_path).as_posix() for uri in result.utterances["uri"]) == sorted(MIXED_NAMES[name])
    # An audio-like file the recipe cannot name is reported, never silently dropped.
    assert [Path(uri).name for uri in result.skipped["uri"]] == ["stray.ogg"]


def test_a_tree_is_walked_a_folder_at_a_time_and_lists_what_list_audio_does(tmp_path):
    """walk_audio holds one folder's entries at a time, through links and loops; list_audio is their sorted union."""
    tree = tmp_path / "tree"
    for relative in ("a/x1.wav", "a/x2.FLAC", "a/b/y.wav", "a_b/z.flac"):
        _write_audio(tree / relative)
    _write_text(tree / "c" / "notes.txt", "not audio\n")
    os.symlink(tree / "a" / "b", tree / "linked")  # the same folder twice: walked once
    os.symlink(tree, tree / "a" / "loop")  # a loop back to the root
    os.symlink(tree / "gone.wav", tree / "c" / "dangling.wav")
    batches = list(base.walk_audio(str(tree)))
    folders = [{posixpath.dirname(relative) for _, relative, _ in files} for files, _ in batches if files]
    assert all(len(names) == 1 for names in folders) and len(folders) == 3
    files, broken = base.list_audio(str(tree))
    assert [relative for _, relative, _ in files] == ["a/b/y.wav", "a/x1.wav", "a/x2.FLAC", "a_b/z.flac"]
    assert sorted(file for batch, _ in batches for file in batch) == sorted(files)
    assert [entry["uri"] for _, dangling in batches for entry in dangling] == [entry["uri"] for entry in broken] == [str(tree / "c" / "dangling.wav")]
    assert all(stamp == fingerprint({"size": os.stat(uri).st_size, "mtime": os.stat(uri).st_mtime}) for uri, _, stamp in files)


def test_a_folder_that_cannot_be_read_stops_the_listing_and_is_named(tmp_path, monkeypatch):
    """A sub-folder os.walk cannot list would otherwise drop its files from the corpus unnoticed."""
    from crossemo import inputs

    tree = tmp_path / "tree"
    for relative in ("a/x.wav", "b/y.wav"):
        _write_audio(tree / relative)
    listed = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(tree / "b"):  # chmod does not stop root, who runs CI
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return listed(path)

    monkeypatch.setattr(os, "scandir", scandir)
    for listing, error, named in (
        (lambda: base.list_audio(str(tree)), CorpusError, "corpus root"), (lambda: inputs.list_inputs([str(tree)]), inputs.InputError, "--audio"),
    ):
        with pytest.raises(error) as caught:
            listing()
        message = str(caught.value)
        assert message.startswith(f"cannot list {named} {tree}: ") and "Permission denied" in message and str(tree / "b") in message, message


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_missing_root_names_it(tmp_path, name):
    root = str(tmp_path / "nowhere" / ("corpus.csv" if name == "manifest" else "corpus"))
    with pytest.raises(CorpusError) as caught:
        prepare(name, root)
    assert root in str(caught.value) and "does not exist" in str(caught.value)


def test_root_without_utterances(tmp_path):
    _write_audio(tmp_path / "f1" / "dis-f1-b1.wav")
    with pytest.raises(CorpusError, match="1 audio files skipped"):
        prepare("emovo", str(tmp_path))


def test_unknown_recipe():
    with pytest.raises(CorpusError) as caught:
        prepare("crema", "/data/crema")
    assert str(caught.value) == "unknown corpus recipe 'crema'; known: emodb, emovo, iemocap, manifest, ravdess, savee"


def test_unknown_option(tmp_path):
    with pytest.raises(CorpusError, match=r"'emovo' does not take the option merge_excited \(it takes: no options\)"):
        prepare("emovo", str(tmp_path), merge_excited=True)


def test_registry():
    assert sorted(RECIPES) == ["emodb", "emovo", "iemocap", "manifest", "ravdess", "savee"]
    for name, recipe in RECIPES.items():
        assert recipe.name == name and recipe.summary
    assert RECIPES["iemocap"].options() == ("merge_excited",)
    assert RECIPES["manifest"].options() == ("corpus",)
    with pytest.raises(AttributeError):
        RECIPES["emodb"].name = "other"


# --------------------------------------------------------------------------- object storage


def _emovo_like(root: Path) -> Path:
    for speaker in emovo.SPEAKERS:
        for code in ("neu", "rab", "gio", "tri", "dis"):
            for sentence in ("b1", "b2"):
                _write_audio(root / speaker / f"{code}-{speaker}-{sentence}.wav")
    _write_text(root / "README.txt", "EMOVO-like\n")
    return root


def _upload(tree: Path, s3: dict, prefix: str) -> str:
    import boto3

    client = boto3.client("s3", endpoint_url=s3["endpoint"], region_name="us-east-1")
    for path in sorted(tree.rglob("*")):
        if path.is_file():
            client.put_object(Bucket=s3["bucket"], Key=f"{prefix}/{path.relative_to(tree).as_posix()}", Body=path.read_bytes())
    return f"s3://{s3['bucket']}/{prefix}"


@pytest.mark.s3
def test_a_missing_bucket_is_named_apart_from_a_missing_prefix(s3):
    """On object storage "does not exist" has two causes a user fixes differently: a prefix with nothing under it, or no bucket at all."""
    from crossemo import inputs

    options = s3["storage_options"]
    with pytest.raises(CorpusError, match=rf"^corpus root s3://{s3['bucket']}/nothing/here does not exist$"):
        prepare("emovo", f"s3://{s3['bucket']}/nothing/here", storage_options=options)
    with pytest.raises(CorpusError, match=r"^corpus root s3://no-such-bucket-4c1d/emovo does not exist: there is no bucket no-such-bucket-4c1d \(or these credentials"):
        prepare("emovo", "s3://no-such-bucket-4c1d/emovo", storage_options=options)
    # As --audio, named once, by the flag.
    with pytest.raises(inputs.InputError, match=r"^--audio s3://no-such-bucket-4c1d/calls/ does not exist: there is no bucket no-such-bucket-4c1d "):
        inputs.list_inputs(["s3://no-such-bucket-4c1d/calls/"], storage_options=options)


@pytest.mark.s3
def test_listing_from_s3(tmp_path, s3):
    tree = _emovo_like(tmp_path / "emovo")
    uri = _upload(tree, s3, "corpora/emovo")
    remote = prepare("emovo", uri, storage_options=s3["storage_options"])
    local = prepare("emovo", str(tree))
    _check_frame(remote, "emovo")
    assert len(remote.utterances) == 48 and len(remote.skipped) == 12
    columns = ["corpus", "speaker", "emotion", "label"]
    pd.testing.assert_frame_equal(remote.utterances[columns], local.utterances[columns])
    expected = [f"{uri}/{Path(path).relative_to(tree).as_posix()}" for path in local.utterances["uri"]]
    assert remote.utterances["uri"].tolist() == expected
    assert remote.skipped["uri"].str.startswith(f"{uri}/").all()
    assert remote.root == uri


@pytest.mark.s3
def test_iemocap_from_s3(iemocap_tree, s3):
    uri = _upload(iemocap_tree, s3, "IEMOCAP_full_release")
    remote = prepare("iemocap", uri, storage_options=s3["storage_options"], merge_excited=True)
    local = prepare("iemocap", str(iemocap_tree), merge_excited=True)
    columns = ["speaker", "emotion", "label"]
    pd.testing.assert_frame_equal(remote.utterances[columns], local.utterances[columns])
    assert remote.utterances["uri"].str.startswith(f"{uri}/Session").all()
    missing = remote.skipped.loc[remote.skipped["reason"] == iemocap.MISSING_AUDIO, "uri"].tolist()
    assert missing == [f"{uri}/Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M003.wav"]


@pytest.mark.s3
def test_manifest_on_s3(tmp_path, s3):
    tree = tmp_path / "own"
    _write_audio(tree / "anna" / "t1.wav")
    _write_audio(tree / "ben" / "t1.flac")
    _write_audio(tmp_path / "elsewhere" / "c.wav")
    uri = _upload(tree, s3, "own")
    elsewhere = _upload(tmp_path / "elsewhere", s3, "elsewhere")
    _write_text(tree / "list.csv", f"path,speaker,emotion\nanna/t1.wav,anna,happy\nben/t1.flac,ben,sad\nben/t2.wav,ben,sad\n{elsewhere}/c.wav,cleo,angry\n")
    _upload(tree, s3, "own")
    result = prepare("manifest", f"{uri}/list.csv", storage_options=s3["storage_options"])
    _check_frame(result, "list")
    assert result.utterances["uri"].tolist() == [f"{elsewhere}/c.wav", f"{uri}/anna/t1.wav", f"{uri}/ben/t1.flac"]
    assert result.skipped.to_dict("records") == [{"uri": f"{uri}/ben/t2.wav", "corpus": "list", "reason": "file not found"}]


# --------------------------------------------------------------------------- manifest recipe


@pytest.fixture
def own(tmp_path) -> Path:
    """A corpus of one's own: recordings in speaker folders beside the manifest."""
    for relative in ("anna/t1.wav", "anna/t2.wav", "anna/t3.flac", "01/a.wav", "01/b.WAV", "ben/deep/x.wav", "ben/notes.txt"):
        if relative.endswith(".txt"):
            _write_text(tmp_path / "own" / relative, "notes\n")
        else:
            _write_audio(tmp_path / "own" / relative)
    return tmp_path / "own"


def test_manifest_csv_relative(own):
    _write_text(
        own / "my_speakers.csv",
        "path,speaker,emotion,label\n"
        "anna/t1.wav,anna,Happy,\n"
        "anna/t2.wav,anna, NEU ,calm-ish\n"
        "./anna/t3.flac,anna,Angry,\n"
        "01/a.wav,01,sad,\n"
        "01/b.WAV,01,Sadness,\n"
        "ben/deep/x.wav,ben,bored,\n"
        "ben/missing.wav,ben,joy,\n"
        "ben/notes.txt,ben,joy,\n",
    )
    result = manifest.prepare_manifest(str(own / "my_speakers.csv"))
    _check_frame(result, "my_speakers")
    rows = {Path(uri).relative_to(own).as_posix(): (speaker, emotion, label) for uri, speaker, emotion, label in result.utterances[["uri", "speaker", "emotion", "label"]].to_numpy()}
    assert rows == {
        "anna/t1.wav": ("anna", "joy", "Happy"),
        "anna/t2.wav": ("anna", "neutral", "calm-ish"),
        "anna/t3.flac": ("anna", "anger", "Angry"),
        "01/a.wav": ("01", "sadness", "sad"),
        "01/b.WAV": ("01", "sadness", "Sadness"),
        # Listed, so tried: its content decides (it is rejected when decoded).
        "ben/notes.txt": ("ben", "joy", "joy"),
    }
    reasons = {Path(uri).relative_to(own).as_posix(): reason for uri, reason in result.skipped[["uri", "reason"]].to_numpy()}
    assert reasons == {
        "ben/deep/x.wav": "emotion 'bored' is not one of the four classes (neutral, anger, joy, sadness or a synonym)",
        "ben/missing.wav": "file not found",
    }
    assert result.root == str(own / "my_speakers.csv")


def test_manifest_duplicate_through_dots(own):
    _write_text(own / "m.csv", "path,speaker,emotion\nanna/t1.wav,anna,joy\nben/../anna/t1.wav,ben,sad\n")
    with pytest.raises(CorpusError, match=r"lists ben/\.\./anna/t1\.wav twice \(rows 1 and 2, as anna/t1\.wav\)"):
        manifest.prepare_manifest(str(own / "m.csv"))


def test_manifest_parquet_speaker_numbers_stored_as_floats_read_as_whole_numbers(own):
    """A numeric column with a gap is stored as floats: speaker 3 is "3", not "3.0"; 3.5, and ids too long for a float to hold exactly, stay as they read."""
    frame = pd.DataFrame({
        "path": ["anna/t1.wav", "anna/t2.wav", "01/a.wav", "anna/t1.wav"], "speaker": [3.0, 3.0, 3.5, 12345678901234567.0], "emotion": ["joy", "sad", "joy", "joy"],
        "label": [1.0, 2.0, 3.0, 4.0],  # only the speaker column is read this way
    })
    frame.iloc[:3].to_parquet(own / "floats.parquet")
    result = manifest.prepare_manifest(str(own / "floats.parquet"), corpus="own")
    assert sorted(set(result.utterances["speaker"])) == ["3", "3.5"] and sorted(set(result.utterances["label"])) == ["1.0", "2.0", "3.0"]
    frame.iloc[3:].to_parquet(own / "long.parquet")
    assert list(manifest.prepare_manifest(str(own / "long.parquet"), corpus="own").utterances["speaker"]) == ["1.2345678901234568e+16"]


def test_manifest_parquet_absolute(own, tmp_path):
    outside = _write_audio(tmp_path / "outside" / "z.flac")
    frame = pd.DataFrame(
        {
            "Path": [str(own / "anna" / "t1.wav"), f"file://{own / 'anna' / 't2.wav'}", str(outside), "01/a.wav", str(tmp_path / "gone.wav")],
            "Speaker": [7, 7, 8, 9, 9],
            "Emotion": ["HAPPINESS", "ang", "neutral", "hap", "sad"],
        }
    )
    frame.to_parquet(own / "list.parquet")
    result = manifest.prepare_manifest(str(own / "list.parquet"), corpus="own")
    _check_frame(result, "own")
    expected = [
        [str(own / "01" / "a.wav"), "9", "joy", "hap"],
        [str(own / "anna" / "t1.wav"), "7", "joy", "HAPPINESS"],
        [str(own / "anna" / "t2.wav"), "7", "anger", "ang"],
        [str(outside), "8", "neutral", "neutral"],
    ]
    assert result.utterances[["uri", "speaker", "emotion", "label"]].to_numpy().tolist() == sorted(expected)
    assert result.skipped.to_dict("records") == [{"uri": str(tmp_path / "gone.wav"), "corpus": "own", "reason": "file not found"}]


def test_manifest_fingerprints_match_recipes(tmp_path):
    tree = _emovo_like(tmp_path / "emovo")
    listed = emovo.prepare_emovo(str(tree))
    frame = pd.DataFrame({"path": [Path(uri).relative_to(tree).as_posix() for uri in listed.utterances["uri"]], "speaker": listed.utterances["speaker"], "emotion": listed.utterances["emotion"]})
    frame.to_csv(tree / "emovo.csv", index=False)
    own = prepare("manifest", str(tree / "emovo.csv"))
    assert own.corpus == "emovo"
    pd.testing.assert_frame_equal(own.utterances[["uri", "speaker", "emotion", "fingerprint"]], listed.utterances[["uri", "speaker", "emotion", "fingerprint"]])
    import fsspec

    first = own.utterances["uri"].iloc[0]
    assert own.utterances["fingerprint"].iloc[0] == fingerprint(fsspec.filesystem("file").info(first))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("m.csv", "path,emotion\na.wav,joy\n", r"lacks the column speaker \(it has: path, emotion\)"),
        ("m.csv", "file,who,feeling\na.wav,x,joy\n", r"lacks the columns path, speaker, emotion \(it has: file, who, feeling\)"),
        ("m.csv", "path,speaker,emotion\n../a.wav,x,joy\n", r"row 1 path \.\./a\.wav leads outside the manifest's folder"),
        ("m.csv", "path,speaker,emotion\n\\etc\\a.wav,x,joy\n", r"row 1 path \\etc\\a\.wav starts at the root of a Windows drive"),
        ("m.csv", "path,speaker,emotion\nanna/t1.wav,x,joy\nanna/../../a.wav,x,joy\n", r"row 2 path anna/\.\./\.\./a\.wav leads outside"),
        ("m.csv", "path,speaker,emotion\nanna/t1.wav,x,joy\nanna/t2.wav,x,joy\nanna/t1.wav,y,sad\n", r"lists anna/t1\.wav twice \(rows 1 and 3\)"),
        ("m.csv", "path,speaker,emotion\nanna/t1.wav,,joy\n", r"row 1 \(anna/t1\.wav\) has an empty speaker"),
        ("m.csv", "path,speaker,emotion\nanna/t1.wav,   ,joy\n", r"row 1 \(anna/t1\.wav\) has an empty speaker"),
        ("m.csv", "path,speaker,emotion\n,x,joy\n", r"row 1 has an empty path"),
        # Every bad row at once (a messy table took one run per problem), the first five named.
        (
            "m.csv",
            "path,speaker,emotion\nanna/t1.wav,x,joy\n../a.wav,x,joy\nanna/t1.wav,y,sad\nanna/t2.wav,,joy\n,x,joy\n,x,sad\n,x,neutral\n",
            r"m\.csv has 6 bad rows: row 2 path \.\./a\.wav leads outside the manifest's folder; lists anna/t1\.wav twice \(rows 1 and 3\); "
            r"row 4 \(anna/t2\.wav\) has an empty speaker; row 5 has an empty path; row 6 has an empty path; and 1 more$",
        ),
        ("m.csv", "path,speaker,emotion,PATH\na,b,c,d\n", r"has the column path more than once"),
        ("m.csv", "", r"is empty"),
        ("m.csv", "path,speaker,emotion\nanna/t1.wav,x,bored\n", r"has no utterance of neutral, anger, joy, sadness \(1 audio files skipped"),
        ("m.parquet", "not parquet at all", r"cannot read manifest .*m\.parquet: "),
        ("m.tsv", "path\tspeaker\temotion\n", r"must be a \.csv or \.parquet file"),
    ],
)
def test_manifest_errors(own, name, content, message):
    _write_text(own / name, content)
    with pytest.raises(CorpusError, match=message) as caught:
        manifest.prepare_manifest(str(own / name))
    assert "\n" not in str(caught.value)
    assert str(own / name) in str(caught.value) or "'m'" in str(caught.value)


def test_a_table_of_files_to_label_names_every_bad_row_counting_blank_rows(own):
    # The table predict takes: only ``path`` is required, and a blank row
    # (row 2, as a spreadsheet shows it) still counts in the row numbers.
    _write_text(own / "calls.csv", "path,speaker\nanna/t1.wav,x\n,\n../a.wav,x\nanna/t1.wav,y\n,z\nanna/t2.wav,\n")
    with pytest.raises(CorpusError) as caught:
        manifest.list_files(str(own / "calls.csv"))
    assert str(caught.value) == (
        f"{own / 'calls.csv'} has 3 bad rows: row 3 path ../a.wav leads outside the manifest's folder; lists anna/t1.wav twice (rows 1 and 4); row 5 has an empty path"
    )
    _write_text(own / "calls.csv", "path,speaker\nanna/t1.wav,x\n,\nanna/t2.wav,\n")
    files, missing = manifest.list_files(str(own / "calls.csv"))
    assert [Path(uri).name for uri in files["uri"]] == ["t1.wav", "t2.wav"] and files["speaker"].tolist() == ["x", ""] and missing.empty


def test_manifest_missing_file(own):
    with pytest.raises(CorpusError, match=r"manifest .*nothing\.csv does not exist"):
        manifest.prepare_manifest(str(own / "nothing.csv"))
    with pytest.raises(CorpusError, match="is a folder"):
        manifest.prepare_manifest(str(own / "anna"))


def test_manifest_corpus_name():
    assert manifest.corpus_name("/data/my_speakers.csv") == "my_speakers"
    assert manifest.corpus_name("s3://bucket/a/list.v2.parquet") == "list.v2"
    assert manifest.corpus_name("own") == "own"


# --------------------------------------------------------------------------- properties of the parsers

EXTENSIONS = st.sampled_from(["wav", "flac", "WAV", "FLAC", "Wav"])
FOLDERS = st.sampled_from(["", "wav/", "a/b/", "Actor_01/", "DC/", "f1/"])
NAMES = st.text(max_size=40) | st.text(alphabet="abcdefghnstwFLNTWAEM0123456789-_./", max_size=30)


def _mutations(name: str) -> st.SearchStrategy[str]:
    """Near misses of a valid name: one character deleted, replaced, inserted, or the case flipped."""
    positions = st.integers(min_value=0, max_value=max(len(name) - 1, 0))
    chars = st.sampled_from("aAzZ09-_. /")
    return st.one_of(
        positions.map(lambda i: name[:i] + name[i + 1 :]),
        st.tuples(positions, chars).map(lambda ic: name[: ic[0]] + ic[1] + name[ic[0] + 1 :]),
        st.tuples(positions, chars).map(lambda ic: name[: ic[0]] + ic[1] + name[ic[0] :]),
        st.just(name.swapcase()),
    )


def _verdict_ok(verdict) -> None:
    assert isinstance(verdict, (Utterance, Skip))
    if isinstance(verdict, Skip):
        assert verdict.reason.strip()
    else:
        assert verdict.emotion in EMOTIONS and verdict.speaker and verdict.label


@pytest.mark.parametrize("module", [emodb, emovo, ravdess, savee], ids=lambda m: m.NAME)
@PROPERTY
@given(name=NAMES, folder=FOLDERS)
def test_parsers_never_crash_on_random_names(module, name, folder):
    _verdict_ok(module.parse(folder + name))


EMODB_FIELDS = st.tuples(
    st.sampled_from(emodb.SPEAKERS), st.sampled_from(emodb.TEXTS), st.sampled_from(sorted({**emodb.EMOTIONS, **emodb.OTHER_EMOTIONS})), st.sampled_from("abcdefg"), EXTENSIONS, FOLDERS
)


@PROPERTY
@given(fields=EMODB_FIELDS)
def test_emodb_round_trip(fields):
    speaker, text, code, version, ext, folder = fields
    verdict = emodb.parse(f"{folder}{speaker}{text}{code}{version}.{ext}")
    if code in emodb.EMOTIONS:
        assert verdict == Utterance(speaker=speaker, emotion=emodb.EMOTIONS[code], label=code)
    else:
        assert verdict == Skip(f"emotion {code} ({emodb.OTHER_EMOTIONS[code]}) is not one of the four classes")


@PROPERTY
@given(data=st.data(), fields=EMODB_FIELDS)
def test_emodb_near_misses(data, fields):
    speaker, text, code, version, ext, _ = fields
    name = data.draw(_mutations(f"{speaker}{text}{code}{version}.{ext}"))
    verdict = emodb.parse(name)
    _verdict_ok(verdict)
    if isinstance(verdict, Utterance):
        base = posixpath.basename(name)
        assert base[:2] == verdict.speaker and base[5].upper() == verdict.label and re.search(r"\.[A-Za-z0-9]+$", base)


EMOVO_FIELDS = st.tuples(
    st.sampled_from(sorted({**emovo.EMOTIONS, **emovo.OTHER_EMOTIONS})), st.sampled_from(emovo.SPEAKERS), st.sampled_from("abdln"), st.integers(1, 14), EXTENSIONS, FOLDERS
)


@PROPERTY
@given(fields=EMOVO_FIELDS)
def test_emovo_round_trip(fields):
    code, speaker, letter, number, ext, folder = fields
    verdict = emovo.parse(f"{folder}{code}-{speaker}-{letter}{number}.{ext}")
    if code in emovo.EMOTIONS:
        assert verdict == Utterance(speaker=speaker, emotion=emovo.EMOTIONS[code], label=code)
    else:
        assert isinstance(verdict, Skip) and emovo.OTHER_EMOTIONS[code] in verdict.reason


@PROPERTY
@given(data=st.data(), fields=EMOVO_FIELDS)
def test_emovo_near_misses(data, fields):
    code, speaker, letter, number, ext, _ = fields
    name = data.draw(_mutations(f"{code}-{speaker}-{letter}{number}.{ext}"))
    verdict = emovo.parse(name)
    _verdict_ok(verdict)
    if isinstance(verdict, Utterance):
        emo, spk, _ = posixpath.basename(name).split("-")
        assert (emovo.EMOTIONS[emo.lower()], spk.lower()) == (verdict.emotion, verdict.speaker)


TWO_DIGITS = st.integers(0, 99).map(lambda n: f"{n:02d}")
RAVDESS_FIELDS = st.tuples(
    st.sampled_from(["03", "03", "03", "01", "02"]),
    st.sampled_from(["01", "01", "02"]),
    st.sampled_from([f"{n:02d}" for n in range(1, 9)] + ["09", "00"]),
    TWO_DIGITS,
    TWO_DIGITS,
    TWO_DIGITS,
    st.integers(1, 24).map(lambda n: f"{n:02d}"),
    EXTENSIONS,
    FOLDERS,
)


@PROPERTY
@given(fields=RAVDESS_FIELDS)
def test_ravdess_round_trip(fields):
    mm, vv, ee, ii, ss, rr, aa, ext, folder = fields
    verdict = ravdess.parse(f"{folder}{mm}-{vv}-{ee}-{ii}-{ss}-{rr}-{aa}.{ext}")
    if (mm, vv) == ("03", "01") and ee in ravdess.EMOTIONS:
        assert verdict == Utterance(speaker=aa, emotion=ravdess.EMOTIONS[ee], label=ee)
    else:
        assert isinstance(verdict, Skip) and verdict.reason


@PROPERTY
@given(data=st.data(), fields=RAVDESS_FIELDS)
def test_ravdess_near_misses(data, fields):
    mm, vv, ee, ii, ss, rr, aa, ext, _ = fields
    name = data.draw(_mutations(f"{mm}-{vv}-{ee}-{ii}-{ss}-{rr}-{aa}.{ext}"))
    verdict = ravdess.parse(name)
    _verdict_ok(verdict)
    if isinstance(verdict, Utterance):
        parts = posixpath.basename(name).split(".")[0].split("-")
        assert parts[:2] == ["03", "01"] and ravdess.EMOTIONS[parts[2]] == verdict.emotion and parts[6] == verdict.speaker


SAVEE_FIELDS = st.tuples(
    st.sampled_from(savee.SPEAKERS), st.sampled_from(sorted({**savee.EMOTIONS, **savee.OTHER_EMOTIONS})), st.integers(1, 30), st.booleans(), EXTENSIONS, st.sampled_from(["", "AudioData/", "x/"])
)


@PROPERTY
@given(fields=SAVEE_FIELDS)
def test_savee_round_trip(fields):
    speaker, code, number, flat, ext, prefix = fields
    relative = f"{prefix}{speaker}_{code}{number:02d}.{ext}" if flat else f"{prefix}{speaker}/{code}{number:02d}.{ext}"
    verdict = savee.parse(relative)
    if code in savee.EMOTIONS:
        assert verdict == Utterance(speaker=speaker, emotion=savee.EMOTIONS[code], label=code)
    else:
        assert isinstance(verdict, Skip) and savee.OTHER_EMOTIONS[code] in verdict.reason


@PROPERTY
@given(data=st.data(), fields=SAVEE_FIELDS)
def test_savee_near_misses(data, fields):
    speaker, code, number, flat, ext, _ = fields
    relative = data.draw(_mutations(f"{speaker}_{code}{number:02d}.{ext}" if flat else f"{speaker}/{code}{number:02d}.{ext}"))
    verdict = savee.parse(relative)
    _verdict_ok(verdict)
    if isinstance(verdict, Utterance):
        assert verdict.speaker in savee.SPEAKERS and verdict.speaker.lower() in relative.lower()
        assert savee.EMOTIONS[verdict.label] == verdict.emotion


IEMOCAP_CODES = sorted({**iemocap.EMOTIONS, **iemocap.OTHER_EMOTIONS})
IEMOCAP_FIELDS = st.tuples(
    st.integers(1, 5),
    st.sampled_from("FM"),
    st.sampled_from(["impro01", "impro05a", "script01_1", "script02_2b", "script03_1"]),
    st.sampled_from("FM"),
    st.integers(0, 120),
    st.sampled_from(IEMOCAP_CODES),
    st.floats(0, 1000, allow_nan=False),
    st.booleans(),
)


@PROPERTY
@given(fields=IEMOCAP_FIELDS)
def test_iemocap_round_trip(fields):
    session, wearer, dialog, gender, number, code, start, merge = fields
    turn = f"Ses0{session}{wearer}_{dialog}_{gender}{number:03d}"
    line = f"[{start:.4f} - {start + 1.5:.4f}]\t{turn}\t{code}\t[2.5000, 3.5000, 2.0000]"
    assert iemocap.parse_label_line(line) == (turn, code)
    assert iemocap.dialog_of(turn) == f"Ses0{session}{wearer}_{dialog}"
    verdict = iemocap.parse(f"{iemocap.dialog_of(turn)}/{turn}.wav", {turn: code}, merge_excited=merge)
    if code in iemocap.EMOTIONS or (merge and code == "exc"):
        assert verdict == Utterance(speaker=f"Ses0{session}_{gender}", emotion=iemocap.EMOTIONS.get(code, "joy"), label=code)
    else:
        assert isinstance(verdict, Skip) and iemocap.OTHER_EMOTIONS[code] in verdict.reason
    assert iemocap.parse(f"{turn}.flac", {}) == Skip("no label line for this turn in the EmoEvaluation files")


@PROPERTY
@given(data=st.data(), fields=IEMOCAP_FIELDS)
def test_iemocap_near_misses(data, fields):
    session, wearer, dialog, gender, number, code, start, merge = fields
    turn = f"Ses0{session}{wearer}_{dialog}_{gender}{number:03d}"
    line = data.draw(_mutations(f"[{start:.4f} - {start + 1.5:.4f}]\t{turn}\t{code}\t[2.5, 3.5, 2.0]") | NAMES)
    parsed = iemocap.parse_label_line(line)
    assert parsed is None or (parsed[0] in line and parsed[1] == parsed[1].lower() and iemocap.speaker_of(parsed[0]))
    name = data.draw(_mutations(f"{turn}.wav") | NAMES)
    verdict = iemocap.parse(name, {turn: code, posixpath.basename(name).rpartition(".")[0]: code}, merge_excited=merge)
    _verdict_ok(verdict)
    if isinstance(verdict, Utterance):
        stem = posixpath.basename(name).rpartition(".")[0]
        assert verdict.speaker == iemocap.speaker_of(stem) and stem.startswith(verdict.speaker[:5])


# --------------------------------------------------------------------------- properties of the manifest reader


@PROPERTY
@given(text=st.text(max_size=20))
def test_normalize_emotion_random(text):
    assert manifest.normalize_emotion(text) in (None, *EMOTIONS)
    _verdict_ok(manifest.parse("speaker", text))


@PROPERTY
@given(word=st.sampled_from(sorted(manifest.SYNONYMS)), flips=st.lists(st.booleans(), min_size=12, max_size=12), pad=st.sampled_from(["", " ", "  ", "\t"]))
def test_normalize_emotion_synonyms(word, flips, pad):
    written = pad + "".join(c.upper() if flip else c for c, flip in zip(word, flips)) + word[len(flips) :] + pad
    assert manifest.normalize_emotion(written) == manifest.SYNONYMS[word]
    assert manifest.parse("s", written) == Utterance(speaker="s", emotion=manifest.SYNONYMS[word], label=written.strip())


CELL = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters=":"), max_size=12)
EXISTING = ["a/one.wav", "a/two.flac", "b/three.WAV", "four.wav", "a/notes.txt", *(f"gen/{n}.wav" for n in range(10))]
MANIFEST_PATHS = (
    st.integers(0, 40).map(lambda n: f"gen/{n}.wav")
    | st.sampled_from(EXISTING)
    | st.sampled_from(["../x.wav", "a/../four.wav", "missing.wav", "./a/one.wav", "b/../../c.wav", "gen\\3.wav", ""])
    | CELL.filter(str.strip)
)
MANIFEST_SPEAKERS = st.sampled_from(["anna", "01", "ben", "Ünal", "x y"] * 4 + ["", " "]) | CELL.filter(str.strip)
MANIFEST_EMOTIONS = st.sampled_from(sorted(manifest.SYNONYMS) + ["Happy", "SAD", "bored", "calm", ""]) | CELL


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.tuples(MANIFEST_PATHS, MANIFEST_SPEAKERS, MANIFEST_EMOTIONS), max_size=8), parquet=st.booleans())
def test_manifest_reader_random_tables(rows, parquet):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "corpus"
        for relative in EXISTING:
            _write_audio(root / relative)
        frame = pd.DataFrame(rows, columns=["path", "speaker", "emotion"])
        target = root / ("list.parquet" if parquet else "list.csv")
        frame.to_parquet(target) if parquet else frame.to_csv(target, index=False)
        try:
            result = manifest.prepare_manifest(str(target))
        except CorpusError as error:
            assert str(error).strip() and "\n" not in str(error)
            event(f"refused: {str(error).split(': ', 1)[-1][:40]}")
            return
        event("read")
        _check_frame(result, "list")
        blank = sum(1 for row in rows if not "".join(row).strip())  # skipped with a warning, listed nowhere
        assert len(result.utterances) + len(result.skipped) + blank == len(rows)
        assert any("blank row" in warning for warning in result.warnings) == bool(blank)
        assert all(os.path.exists(uri) for uri in result.utterances["uri"])
        uris = [*result.utterances["uri"], *result.skipped["uri"]]
        absolute = sum(1 for path, _, _ in rows if path.strip().startswith("/"))
        assert sum(1 for uri in uris if not Path(uri).is_relative_to(root)) <= absolute
