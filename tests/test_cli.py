"""Bad input ends in one line naming the cause and exit status 2, before any Ray work."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import ray

from crossemo import cli
from crossemo.synthetic import make_demo_corpora


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_corpora(tmp_path_factory.mktemp("demo"), speakers=2, per_emotion=1)


def run_cli(args, capsys):
    status = cli.main(args)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_corpora_lists_every_recipe(capsys):
    status, out, _ = run_cli(["corpora"], capsys)
    assert status == 0
    for name in ("emodb", "emovo", "iemocap", "manifest", "ravdess", "savee"):
        assert name in out


@pytest.mark.parametrize("args, message", [
    (["features", "--corpus", "nosuch=/tmp", "--out", "OUT"], "unknown corpus recipe 'nosuch'"),
    (["features", "--corpus", "emovo=/does/not/exist", "--out", "OUT"], "/does/not/exist does not exist"),
    (["features", "--corpus", "emovo", "--out", "OUT"], "is not NAME=URI"),
    (["features", "--corpus", "manifest={a}", "--out", "OUT", "--feature-set", "nosuch"], "unknown feature set 'nosuch'"),
    (["run", "--corpus", "manifest={a}", "--corpus", "manifest={a}", "--out", "OUT"], "given twice"),
    (["run", "--corpus", "manifest={a}", "--corpus", "manifest={b}", "--out", "OUT", "--methods", "rf,gan"], "unknown method 'gan'"),
    (["run", "--corpus", "manifest={a}", "--corpus", "manifest={b}", "--out", "OUT", "--pairs", "synth_studio:nosuch"], "names corpus 'nosuch'"),
    (["run", "--config", "/does/not/exist.toml"], "config file /does/not/exist.toml does not exist"),
    (["run", "--config", "{folder}"], "is a folder, not a TOML file"),
    (["run", "--config", "{latin}"], "is not UTF-8 text (byte 0xff at position 7); save it as UTF-8"),
    # An empty list in a config names the file's key, not a flag the user never gave.
    (["run", "--config", "{empty_methods}"], "empty_methods.toml: methods is empty; give \"all\" or [\"m1\", \"m2\", …]"),
    (["run", "--config", "{empty_pairs}"], "empty_pairs.toml: pairs is empty; give \"all\" or [\"SOURCE:TARGET\", …]"),
    (["evaluate", "--features", "/does/not/exist", "--out", "OUT"], "no feature tables under /does/not/exist"),
    # A misspelt method is the setting's fault: no hint at the files extraction left out.
    (["evaluate", "--features", "{store}", "--out", "OUT", "--methods", "gan"], "unknown method 'gan'; known:"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, demo, tmp_path, capsys):
    (tmp_path / "latin.toml").write_bytes(b'out = "\xff\xfe"\n')
    (tmp_path / "empty_methods.toml").write_text('methods = []\n')
    (tmp_path / "empty_pairs.toml").write_text('pairs = " , "\n')
    (tmp_path / "store").mkdir()
    for corpus in ("c", "d"):
        pd.DataFrame({"corpus": [corpus], "speaker": ["s"], "emotion": ["joy"], "uri": ["u"], "sha256": ["h"], "f0": [1.0]}).to_parquet(tmp_path / "store" / f"{corpus}.parquet")
    paths = {"a": demo["synth_studio"], "b": demo["synth_phone"], "folder": tmp_path, "latin": tmp_path / "latin.toml",
        "empty_methods": tmp_path / "empty_methods.toml", "empty_pairs": tmp_path / "empty_pairs.toml", "store": tmp_path / "store"}
    args = [arg.format(**paths).replace("OUT", str(tmp_path / "out")) for arg in args]
    status, _, err = run_cli(args, capsys)
    assert status == 2
    assert message in err and "_rejected.parquet" not in err, err
    assert len(err.strip().splitlines()) == 1
    assert not ray.is_initialized()


@pytest.mark.parametrize("argv, message", [
    (["predict", "--model", "m", "--audio", "a", "--out", "o", "--segment", "abc"], "argument --segment: 'abc' is neither a number of seconds nor speech (see crossemo predict --help)"),
    (["run", "--seed", "x"], "argument --seed: invalid int value: 'x' (see crossemo run --help)"),
    ([], "the following arguments are required: command (see crossemo --help)"),
])
def test_a_command_line_that_does_not_parse_is_one_line_and_exit_2(argv, message, capsys):
    """As every other bad input: one line with the same prefix, and the help of the command meant."""
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.splitlines() == [f"crossemo: error: {message}"], err


def test_a_file_gone_missing_inside_a_run_is_a_failure_not_bad_input(demo, tmp_path, monkeypatch, capsys):
    """A storage read that finds nothing mid-run (a stale listing, a file removed under the run) is a fault with a traceback, not exit 2 and a bare path."""
    from crossemo import pipeline

    def vanished(config, *, evaluate):
        raise FileNotFoundError("bucket/out/predictions/part-0.parquet")

    monkeypatch.setattr(pipeline, "run", vanished)
    with pytest.raises(FileNotFoundError):
        cli.main(["run", "--corpus", f"manifest={demo['synth_studio']}", "--corpus", f"manifest={demo['synth_phone']}", "--out", str(tmp_path / "out")])
    assert "crossemo: error" not in capsys.readouterr().err


@pytest.mark.parametrize(("name", "why"), [
    ("r+x", "holds '+'"), ("r,x", "holds ','"), ("r:x", "holds ':'"), (" r", "is empty or begins or ends with a space"), ("_manifest", "begins with '_'"),
])
def test_a_corpus_name_that_pairs_would_split_is_refused(name, why, demo, tmp_path, capsys):
    """A manifest's corpus name is its file name: ``r+x.csv`` ran until the pooled source ``a+r+x`` was split back into names (a traceback)."""
    manifest = tmp_path / f"{name}.csv"
    manifest.write_bytes(Path(demo["synth_phone"]).read_bytes())
    status, _, err = run_cli(["run", "--corpus", f"manifest={demo['synth_studio']}", "--corpus", f"manifest={manifest}", "--out", str(tmp_path / "out")], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert f"corpus name {name!r} (from the file name of {manifest}) {why}" in err, err
    assert not (tmp_path / "out").exists() and not ray.is_initialized()


def test_manifest_errors_are_caught_before_ray(tmp_path, capsys):
    bad = tmp_path / "own.csv"
    pd.DataFrame({"path": ["a.wav"], "speaker": ["x"]}).to_csv(bad, index=False)
    status, _, err = run_cli(["features", "--corpus", f"manifest={bad}", "--out", str(tmp_path / "out")], capsys)
    assert status == 2 and "emotion" in err
    assert not ray.is_initialized()


def test_config_file_rejects_unknown_settings(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text('out = "x"\ntrees = 5\n')
    status, _, err = run_cli(["run", "--config", str(config)], capsys)
    assert status == 2 and "unknown setting 'trees'" in err


def test_single_speaker_target_is_refused_before_ray(tmp_path, capsys):
    single = make_demo_corpora(tmp_path / "single", speakers=1, per_emotion=1)
    args = ["run", "--out", str(tmp_path / "out"), *[f"--corpus=manifest={path}" for path in single.values()]]
    status, _, err = run_cli(args, capsys)
    assert status == 2 and "has 1 speaker" in err and "at least two" in err
    assert not ray.is_initialized()


def test_a_target_short_of_speakers_because_files_were_left_out_says_so(tmp_path, capsys):
    """Paths written relative to another folder leave one speaker: the refusal names the files left out, not only the count."""
    corpora = make_demo_corpora(tmp_path / "demo", speakers=2, per_emotion=1)
    target = pd.read_csv(corpora["synth_phone"])
    first = target["speaker"] == target["speaker"].iloc[0]
    target.loc[first, "path"] = "elsewhere/" + target.loc[first, "path"].astype(str)
    moved = Path(corpora["synth_phone"]).with_name("moved.csv")
    target.to_csv(moved, index=False)
    status, _, err = run_cli(["run", "--out", str(tmp_path / "out"), f"--corpus=manifest={corpora['synth_studio']}", f"--corpus=manifest={moved}"], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "target moved has 1 speaker" in err and f"of the {len(target)} files listed for moved, {first.sum()} were left out, {first.sum()} as file not found" in err, err
    assert not ray.is_initialized()


def test_pair_without_shared_class_is_refused_before_ray(demo, tmp_path, capsys):
    frames = {name: pd.read_csv(path) for name, path in demo.items()}
    paths = {}
    for name, emotion in (("synth_studio", "joy"), ("synth_phone", "anger")):
        path = demo[name].parent / f"only_{emotion}.csv"
        frames[name][frames[name]["emotion"] == emotion].to_csv(path, index=False)
        paths[name] = path
    args = ["run", "--out", str(tmp_path / "out"), f"--corpus=manifest={paths['synth_studio']}", f"--corpus=manifest={paths['synth_phone']}"]
    status, _, err = run_cli(args, capsys)
    assert status == 2 and "shares no emotion class" in err
    assert not ray.is_initialized()
