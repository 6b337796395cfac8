"""Manifests as people save them from spreadsheets, listing real recordings of the shared corpora.

Blank rows, byte-order marks, UTF-16 "Unicode text", Windows-1252 bytes,
``;`` and tab separators, and speaker ids spelled two ways.
"""

from __future__ import annotations

import codecs
import os
from pathlib import Path

import pandas as pd
import pytest
import ray

from crossemo import cli
from crossemo.corpora import CorpusError, manifest

HEADER = ("path", "speaker", "emotion", "label")


@pytest.fixture(scope="module")
def recordings(shared_corpora) -> list[Path]:
    """Six real FLAC recordings: three EMOVO, three RAVDESS."""
    files = sorted((shared_corpora / "emovo" / "f1").glob("*.flac"))[:3] + sorted((shared_corpora / "ravdess" / "Actor_01").glob("*.flac"))[:3]
    assert len(files) == 6
    return files


def _rows(recordings: list[Path]) -> list[tuple[str, ...]]:
    """One row per recording, with a label only UTF-8 or UTF-16 can carry."""
    emotions = ("happy", "neutral", "sad", "angry", "joy", "Sadness")
    return [(str(path), "f1" if "emovo" in path.parts else "actor01", emotion, "felicità" if index == 0 else "") for index, (path, emotion) in enumerate(zip(recordings, emotions, strict=True))]


def _table(rows: list[tuple[str, ...]], *, separator: str = ",", newline: str = "\n") -> str:
    """The text of a manifest: the header, then one line per row."""
    return "".join(separator.join(row) + newline for row in [HEADER, *rows])


def _read(path: Path) -> pd.DataFrame:
    """The utterances of a manifest, without the corpus name the file name gives."""
    return manifest.prepare_manifest(str(path), corpus="own").utterances


def _refused(path: Path) -> str:
    with pytest.raises(CorpusError) as caught:
        manifest.prepare_manifest(str(path))
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    return message


def test_blank_rows_are_skipped_and_counted(recordings, tmp_path):
    rows = _rows(recordings)
    blank = [("", "", "", ""), (" ", " ", "\t", " "), ("",)]  # ",,,", whitespace only, and an empty line
    (tmp_path / "own.csv").write_text(_table([*rows[:2], *blank, *rows[2:]]), encoding="utf-8")
    result = manifest.prepare_manifest(str(tmp_path / "own.csv"))
    assert result.warnings == [f"3 blank rows skipped in manifest {tmp_path / 'own.csv'}"]
    assert sorted(result.utterances["uri"]) == sorted(str(path) for path in recordings)
    assert result.skipped.empty


def test_one_blank_row_is_singular_and_parquet_blank_rows_count_too(recordings, tmp_path):
    rows = [*_rows(recordings), ("", " ", None, "")]
    pd.DataFrame(rows, columns=list(HEADER)).to_parquet(tmp_path / "own.parquet")
    result = manifest.prepare_manifest(str(tmp_path / "own.parquet"))
    assert result.warnings == [f"1 blank row skipped in manifest {tmp_path / 'own.parquet'}"]
    assert len(result.utterances) == len(recordings)


def test_partly_empty_row_is_still_refused_and_numbered_with_the_blank_rows(recordings, tmp_path):
    first, second = _rows(recordings)[:2]
    (tmp_path / "own.csv").write_text(_table([first, ("", "", "", ""), ("", "", "", ""), (second[0], " ", "joy", "")]), encoding="utf-8")
    assert f"row 4 ({second[0]}) has an empty speaker" in _refused(tmp_path / "own.csv")


@pytest.mark.parametrize(
    ("mark", "codec", "separator", "newline"),
    [
        (codecs.BOM_UTF8, "utf-8", ",", "\r\n"),  # Excel's "CSV UTF-8"
        (codecs.BOM_UTF16_LE, "utf-16-le", "\t", "\r\n"),  # Excel's "Unicode text" on Windows
        (codecs.BOM_UTF16_BE, "utf-16-be", ",", "\n"),
    ],
    ids=["utf-8-bom", "utf-16-le-bom", "utf-16-be-bom"],
)
def test_encodings_with_a_byte_order_mark(recordings, tmp_path, mark, codec, separator, newline):
    rows = _rows(recordings)
    (tmp_path / "plain.csv").write_text(_table(rows), encoding="utf-8")
    (tmp_path / "saved.csv").write_bytes(mark + _table(rows, separator=separator, newline=newline).encode(codec))
    saved = _read(tmp_path / "saved.csv")
    pd.testing.assert_frame_equal(saved, _read(tmp_path / "plain.csv"))
    assert "felicità" in set(saved["label"])
    assert sorted(saved["uri"]) == sorted(str(path) for path in recordings)


def test_windows_1252_is_refused_naming_the_byte_and_the_fix(recordings, tmp_path):
    data = _table(_rows(recordings)).encode("cp1252")
    (tmp_path / "own.csv").write_bytes(data)
    position = data.index("à".encode("cp1252"))
    assert _refused(tmp_path / "own.csv") == f"manifest {tmp_path / 'own.csv'} is not UTF-8 or UTF-16 with a BOM (byte 0xe0 at position {position}); save it as 'CSV UTF-8'"


def test_utf16_without_a_byte_order_mark_is_refused(recordings, tmp_path):
    (tmp_path / "own.csv").write_bytes(_table(_rows(recordings)).encode("utf-16-le"))
    assert "(byte 0x00 at position 1); save it as 'CSV UTF-8'" in _refused(tmp_path / "own.csv")


@pytest.mark.parametrize("separator", [";", "\t"], ids=["semicolon", "tab"])
def test_semicolon_and_tab_separators(recordings, tmp_path, separator):
    rows = _rows(recordings)
    (tmp_path / "plain.csv").write_text(_table(rows), encoding="utf-8")
    (tmp_path / "saved.csv").write_text(_table(rows, separator=separator), encoding="utf-8")
    pd.testing.assert_frame_equal(_read(tmp_path / "saved.csv"), _read(tmp_path / "plain.csv"))


def test_semicolon_file_may_hold_commas_in_cells(recordings, tmp_path):
    rows = [(path, speaker, emotion, "calm, mostly") for path, speaker, emotion, _ in _rows(recordings)]
    (tmp_path / "own.csv").write_text(_table(rows, separator=";"), encoding="utf-8")
    assert set(_read(tmp_path / "own.csv")["label"]) == {"calm, mostly"}


def test_other_separators_are_refused(recordings, tmp_path):
    (tmp_path / "own.csv").write_text(_table(_rows(recordings), separator="|"), encoding="utf-8")
    message = _refused(tmp_path / "own.csv")
    assert "cannot tell the column separator from the header line 'path|speaker|emotion|label'" in message
    assert message.endswith("separate columns with ',', ';' or a tab")


def test_speakers_spelled_two_ways_are_kept_apart_with_a_warning(recordings, tmp_path):
    speakers = ("3", "03", "4", "4.0", "Anna", "anna ")
    rows = [(str(path), speaker, "neutral", "") for path, speaker in zip(recordings, speakers, strict=True)]
    (tmp_path / "own.csv").write_text(_table(rows), encoding="utf-8")
    result = manifest.prepare_manifest(str(tmp_path / "own.csv"))
    assert result.warnings == [
        "speakers '3' and '03' differ only in spelling; they are treated as different speakers",
        "speakers '4' and '4.0' differ only in spelling; they are treated as different speakers",
        "speakers 'Anna' and 'anna' differ only in spelling; they are treated as different speakers",
    ]
    assert sorted(result.utterances["speaker"]) == sorted(["3", "03", "4", "4.0", "Anna", "anna"])


def test_cli_refuses_a_windows_1252_manifest_before_ray(recordings, tmp_path, capsys):
    bad = tmp_path / "own.csv"
    bad.write_bytes(_table(_rows(recordings)).encode("cp1252"))
    status = cli.main(["features", "--corpus", f"manifest={bad}", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2
    assert len(err.strip().splitlines()) == 1
    assert str(bad) in err and "save it as 'CSV UTF-8'" in err
    assert not ray.is_initialized()


def test_symlinked_files_and_folders_are_found_and_a_dangling_link_says_so(shared_corpora, tmp_path):
    """A manifest listing files through links: a linked file, a file in a linked folder, a link to nothing."""
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "anna").mkdir(parents=True)
    real = sorted((shared_corpora / "emovo" / "f1").glob("*.flac"))[:3]
    for path in real:
        (elsewhere / "anna" / path.name).write_bytes(path.read_bytes())
    own = tmp_path / "own"
    (own / "ben").mkdir(parents=True)
    os.symlink(elsewhere / "anna", own / "anna")
    os.symlink(elsewhere / "anna" / real[0].name, own / "ben" / "linked.flac")
    os.symlink(elsewhere / "gone.flac", own / "ben" / "gone.flac")
    (own / "list.csv").write_text(
        "path,speaker,emotion\n"
        f"anna/{real[1].name},anna,joy\nanna/{real[2].name},anna,sad\nben/linked.flac,ben,angry\nben/gone.flac,ben,neutral\n"
        # A folder, and a link to one, are rows a user may write by mistake: they were "file not found" and "dangling".
        "ben,ben,joy\nanna,anna,neutral\n"
    )
    result = manifest.prepare_manifest(str(own / "list.csv"))
    assert sorted(Path(uri).relative_to(own).as_posix() for uri in result.utterances["uri"]) == sorted([f"anna/{real[1].name}", f"anna/{real[2].name}", "ben/linked.flac"])
    assert result.skipped["reason"].tolist() == [f"dangling symbolic link (its target {elsewhere / 'gone.flac'} does not exist)", manifest.IS_A_FOLDER, manifest.IS_A_FOLDER]


@pytest.mark.parametrize("on_disk, in_manifest", [("NFC", "NFD"), ("NFD", "NFC")])
def test_a_path_in_the_other_unicode_form_says_which_form_exists(on_disk, in_manifest, shared_corpora, tmp_path):
    """A folder "Zoë" saved in one form and listed in the other is not found; the reason names the form that is there."""
    import unicodedata

    folder = tmp_path / unicodedata.normalize(on_disk, "Zo\u00eb")
    folder.mkdir()
    real = sorted((shared_corpora / "emovo" / "f1").glob("*.flac"))[0]
    (folder / real.name).write_bytes(real.read_bytes())
    (tmp_path / "other.flac").write_bytes(real.read_bytes())
    listed = unicodedata.normalize(in_manifest, f"Zo\u00eb/{real.name}")
    (tmp_path / "list.csv").write_text(f"path,speaker,emotion\n{listed},zoe,joy\nother.flac,ann,joy\nmissing.flac,ann,sad\n", encoding="utf-8")
    result = manifest.prepare_manifest(str(tmp_path / "list.csv"))
    assert result.skipped["reason"].tolist() == [
        f"file not found as spelled, but it exists with its accents in Unicode form {on_disk}; save the manifest's paths in {on_disk}", manifest.NOT_FOUND,
    ]


def test_a_path_whose_folder_and_file_are_in_different_unicode_forms_names_the_spelling_that_exists(shared_corpora, tmp_path):
    """A folder made in NFD holding a file saved in NFC, listed all in NFC: neither whole form exists, so the reason names the path as spelled on disk."""
    import unicodedata

    folder = tmp_path / unicodedata.normalize("NFD", "Zo\u00eb")
    folder.mkdir()
    on_disk = folder / unicodedata.normalize("NFC", "caf\u00e9.flac")
    real = sorted((shared_corpora / "emovo" / "f1").glob("*.flac"))[0]
    on_disk.write_bytes(real.read_bytes())
    (tmp_path / "other.flac").write_bytes(real.read_bytes())
    listed = unicodedata.normalize("NFC", "Zo\u00eb/caf\u00e9.flac")
    (tmp_path / "list.csv").write_text(f"path,speaker,emotion\n{listed},zoe,joy\nother.flac,ann,joy\nZo\u00eb/gone\u00e9.flac,zoe,sad\n", encoding="utf-8")
    result = manifest.prepare_manifest(str(tmp_path / "list.csv"))
    assert result.skipped["reason"].tolist() == [
        f"file not found as spelled, but it exists as {on_disk}, its names' accents in both Unicode forms; list it as spelled there", manifest.NOT_FOUND,
    ]


def test_speaker_names_in_two_unicode_forms_are_warned_about():
    composed, decomposed = "Jos\u00e9", "Jose\u0301"
    assert composed != decomposed
    assert manifest.speaker_key(composed) == manifest.speaker_key(decomposed)
