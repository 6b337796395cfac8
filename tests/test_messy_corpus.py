"""A corpus tree holding every input surprise at once, run through the CLI.

Built from real recordings of ``../shared/corpora``: a speaker folder that is
a symbolic link, a linked file, a dangling link, a link loop, an MP3, an MP3
named ``.wav``, an AAC ``.m4a`` libsndfile cannot read, a WAV whose header
declares no audio, a float WAV at integer scale, a stereo file whose other
channel is DC and hum (hence ``--channel loudest``), an 8 kHz file, a file of
dither only, a copied speaker folder, the same audio under two speakers, and
one recording in both corpora.
Every file must end as a feature row or a ``_rejected`` row, and every
warning must be printed.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
import soundfile as sf
from scipy.signal import resample_poly

from crossemo import cli
from crossemo.labels import METADATA_COLUMNS


def _wav(signal: np.ndarray, rate: int, subtype: str = "PCM_16", audio_format: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, signal, rate, format=audio_format, **({"subtype": subtype} if audio_format == "WAV" else {}))
    return buffer.getvalue()


def _speech(shared: Path, actor: str, name: str) -> tuple[np.ndarray, int]:
    return sf.read(shared / "ravdess" / actor / f"{name}.flac", dtype="float32")


@pytest.fixture(scope="module")
def messy(shared_corpora, tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("messy")
    ravdess, emovo, elsewhere = base / "ravdess", base / "emovo", base / "elsewhere"
    shared = shared_corpora
    # Two plain speakers, and a copy of the first one's folder.
    for actor in ("Actor_01", "Actor_05"):
        shutil.copytree(shared / "ravdess" / actor, ravdess / actor)
    shutil.copytree(shared / "ravdess" / "Actor_01", ravdess / "Actor_01 copy")
    # A speaker folder that lives elsewhere, reached through a link; a loop back to the root.
    shutil.copytree(shared / "ravdess" / "Actor_02", elsewhere / "Actor_02")
    os.symlink(elsewhere / "Actor_02", ravdess / "Actor_02")
    os.symlink("..", ravdess / "Actor_01" / "up")
    odd = ravdess / "Actor_03"
    odd.mkdir()
    take = lambda name: _speech(shared, "Actor_03", name)  # noqa: E731
    # A WAV whose recorder never wrote the data size.
    signal, rate = take("03-01-01-01-01-01-03")
    unclosed = bytearray(_wav(signal, rate))
    at = unclosed.index(b"data")
    unclosed[at + 4 : at + 8] = bytes(4)
    (odd / "03-01-01-01-01-01-03.wav").write_bytes(bytes(unclosed))
    # int16 values written as float.
    signal, rate = take("03-01-03-01-01-01-03")
    (odd / "03-01-03-01-01-01-03.wav").write_bytes(_wav(np.round(signal * 32768).astype(np.float32), rate, subtype="FLOAT"))
    # Stereo: DC bias and mains hum on the first channel, the voice on the second.
    signal, rate = take("03-01-04-01-01-01-03")
    hum = (0.3 + 0.5 * np.sin(2 * np.pi * 50 * np.arange(signal.size) / rate)).astype(np.float32)
    (odd / "03-01-04-01-01-01-03.wav").write_bytes(_wav(np.stack([hum, signal], axis=1), rate))
    # A telephone-rate recording.
    signal, rate = take("03-01-05-01-01-01-03")
    (odd / "03-01-05-01-01-01-03.wav").write_bytes(_wav(resample_poly(signal, 1, 6).astype(np.float32), 8000))
    # Compressed audio, by its own name and under a .wav name; and AAC, which libsndfile cannot read.
    signal, rate = take("03-01-05-01-02-01-03")
    (odd / "03-01-05-01-02-01-03.mp3").write_bytes(_wav(signal, rate, audio_format="MP3"))
    signal, rate = take("03-01-03-01-02-01-03")
    (odd / "03-01-03-01-02-01-03.wav").write_bytes(_wav(signal, rate, audio_format="MP3"))
    (odd / "03-01-05-02-02-01-03.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00" + bytes(4000))
    # Dither only, labelled as if it were speech.
    dither = np.random.default_rng(0).integers(-1, 2, 3 * 16000).astype(np.float32) / 32768
    (odd / "03-01-01-01-02-01-03.wav").write_bytes(_wav(dither, 16000))
    # A linked file, and a link to nothing.
    shutil.copy(shared / "ravdess" / "Actor_03" / "03-01-04-01-02-01-03.flac", elsewhere / "linked.flac")
    os.symlink(elsewhere / "linked.flac", odd / "03-01-04-01-02-01-03.flac")
    os.symlink(elsewhere / "gone.flac", odd / "03-01-04-02-02-01-03.flac")
    # The same audio under another speaker: Actor_02's file copied as Actor_04's.
    (ravdess / "Actor_04").mkdir()
    shutil.copy(elsewhere / "Actor_02" / "03-01-04-01-01-01-02.flac", ravdess / "Actor_04" / "03-01-04-01-01-01-04.flac")
    for name in ("03-01-01-01-01-01-04", "03-01-03-01-01-01-04", "03-01-05-01-01-01-04"):
        shutil.copy(shared / "ravdess" / "Actor_04" / f"{name}.flac", ravdess / "Actor_04" / f"{name}.flac")
    # Two EMOVO speakers, one of whose files is a RAVDESS recording.
    for speaker in ("f1", "m1"):
        (emovo / speaker).mkdir(parents=True)
        for path in sorted((shared / "emovo" / speaker).glob("*-b1.flac")):
            shutil.copy(path, emovo / speaker / path.name)
    shutil.copy(shared / "ravdess" / "Actor_05" / "03-01-01-01-01-01-05.flac", emovo / "m1" / "neu-m1-n9.flac")
    return {"ravdess": ravdess, "emovo": emovo, "elsewhere": elsewhere}


@pytest.fixture(scope="module")
def extracted(messy, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    capture, errors = io.StringIO(), io.StringIO()
    # --channel loudest: the stereo file whose first channel is DC and hum needs
    # the speech-band rule; under the default (the mean) it is rejected as no
    # speech (tests/test_audio.py says so).
    with contextlib.redirect_stdout(capture), contextlib.redirect_stderr(errors):
        status = cli.main(["features", "--corpus", f"ravdess={messy['ravdess']}", "--corpus", f"emovo={messy['emovo']}", "--out", str(out), "--channel", "loudest", "--no-progress"])
    ray.shutdown()
    assert status == 0
    features = out / "features"
    return {
        "stdout": capture.getvalue(),
        "stderr": errors.getvalue(),
        "features": pd.concat([pd.read_parquet(features / f"{c}.parquet") for c in ("ravdess", "emovo")], ignore_index=True),
        "rejected": pd.read_parquet(features / "_rejected.parquet"),
        "duplicates": pd.read_parquet(features / "_duplicates.parquet"),
        "manifest": pd.read_parquet(features / "_manifest.parquet"),
        "out": out,
    }


def _audio_like_files(root: Path) -> set[str]:
    """Every audio-like path below root as the walker sees it (through links, each folder once)."""
    found, seen = set(), set()
    for folder, folders, names in os.walk(root, followlinks=True):
        key = (os.stat(folder).st_dev, os.stat(folder).st_ino)
        if key in seen:
            folders.clear()
            continue
        seen.add(key)
        found.update(os.path.join(folder, name) for name in names if Path(name).suffix.lower() in (".wav", ".flac", ".mp3", ".m4a"))
    return found


def test_every_file_is_a_feature_row_or_a_rejected_row(messy, extracted):
    listed = _audio_like_files(messy["ravdess"]) | _audio_like_files(messy["emovo"])
    rows = set(extracted["features"]["uri"])
    rejected = set(extracted["rejected"]["uri"])
    assert not rows & rejected
    assert rows | rejected == listed
    # Nothing below the link loop was listed twice.
    assert not any("/up/" in uri for uri in listed)


def test_linked_speaker_folder_and_linked_file_are_used(messy, extracted):
    features = extracted["features"]
    assert (features["speaker"] == "02").sum() == len(list((messy["elsewhere"] / "Actor_02").glob("*.flac"))) - 1  # one of its files is also Actor_04's
    assert str(messy["ravdess"] / "Actor_03" / "03-01-04-01-02-01-03.flac") in set(features["uri"])


def test_rejections_name_their_causes(messy, extracted):
    rejected = extracted["rejected"].set_index("uri")
    odd = messy["ravdess"] / "Actor_03"
    reason = lambda path: (rejected.loc[str(path), "stage"], rejected.loc[str(path), "reason"])  # noqa: E731
    assert reason(odd / "03-01-04-02-02-01-03.flac")[0] == "recipe" and reason(odd / "03-01-04-02-02-01-03.flac")[1].startswith("dangling symbolic link")
    assert reason(odd / "03-01-05-02-02-01-03.m4a") == ("decode", "not an audio file (Format not recognised)")
    assert reason(odd / "03-01-01-01-02-01-03.wav")[0] == "decode" and reason(odd / "03-01-01-01-02-01-03.wav")[1].startswith("no speech: peak level -90.3 dBFS")
    copies = rejected[rejected["stage"] == "duplicate"]
    copy_folder = str(messy["ravdess"] / "Actor_01 copy")
    exact = copies[copies.index.str.startswith(copy_folder)]
    assert len(exact) == len(list((messy["ravdess"] / "Actor_01").glob("*.flac")))
    assert all(r.startswith("exact copy of ") and "/Actor_01/" in r for r in exact["reason"])
    conflicting = copies[copies["reason"].str.contains("conflicting")]
    assert sorted(Path(uri).parent.name for uri in conflicting.index) == ["Actor_02", "Actor_04"]


def test_repaired_and_compressed_files_are_used_with_notes(messy, extracted):
    manifest = extracted["manifest"].set_index("uri")
    odd = messy["ravdess"] / "Actor_03"
    note = lambda name: manifest.loc[str(odd / name), "decode_notes"]  # noqa: E731
    assert note("03-01-01-01-01-01-03.wav").startswith("WAV header declared no audio data; recovered")
    assert note("03-01-03-01-01-01-03.wav").startswith("float samples at 16-bit integer scale")
    assert manifest.loc[str(odd / "03-01-04-01-01-01-03.wav"), "channel"] == "1"
    assert manifest.loc[str(odd / "03-01-05-01-01-01-03.wav"), "sampling_rate"] == 8000
    used = set(extracted["features"]["uri"])
    assert {str(odd / "03-01-05-01-02-01-03.mp3"), str(odd / "03-01-03-01-02-01-03.wav")} <= used
    assert set(manifest["sampling_rate"].dropna().astype(int)) == {8000, 48000}


def test_recording_in_both_corpora_is_reported(messy, extracted):
    duplicates = extracted["duplicates"]
    across = duplicates[duplicates["action"].str.startswith("kept; also in")]
    assert sorted(across["corpus"]) == ["emovo", "ravdess"]
    assert across["sha256"].nunique() == 1


def test_every_warning_is_printed_on_stderr(extracted):
    stdout, stderr = extracted["stdout"], extracted["stderr"]
    for expected in (
        "warning: ravdess: 1 of ",  # below the analysis rate
        "are recorded below the analysis rate 16000 Hz (8000 Hz): their upper band is empty",
        "WAV header declared no audio data; recovered",
        "float samples at 16-bit integer scale",
        "groups of identical recordings",
        "1 recording in more than one corpus",
    ):
        assert expected in stderr, expected
    # Results stay on stdout, apart from the warnings, so they can be piped.
    assert "warning:" not in stdout
    assert "dangling symbolic link" in stdout and "no speech" in stdout


def test_identical_content_is_extracted_once(extracted):
    stdout = extracted["stdout"]
    manifest = extracted["manifest"]
    distinct = manifest.loc[manifest["sampling_rate"].notna(), "sha256"].nunique()
    assert f": {distinct} files extracted, 0 reused" in stdout
    assert len(extracted["features"].columns) == len(METADATA_COLUMNS) + 1582


def test_a_conflicting_copy_is_named_by_a_copy_whose_label_differs():
    """Three copies, two labelled alike: each rejection names a copy with another label, the reason it is rejected."""
    from crossemo.featurestore import find_duplicates

    copies = pd.DataFrame({
        "corpus": "emovo", "sha256": "same", "uri": ["f2/neu-f2-b1.flac", "f2/neu-f2-b2.flac", "f3/rab-f3-b1.flac"],
        "speaker": ["f2", "f2", "f3"], "emotion": ["neutral", "neutral", "anger"],
    })
    _, rejected = find_duplicates(copies)
    assert len(rejected) == 3
    for row in rejected.itertuples():
        mine = copies.set_index("uri").loc[row.uri]
        twin = copies.set_index("uri").loc[row.reason.removeprefix("same audio as ").split(" (")[0]]
        assert (twin["speaker"], twin["emotion"]) != (mine["speaker"], mine["emotion"]), row.reason
