"""Scheduled re-evaluation: every run is recorded, reuses work, and two runs compare."""

from __future__ import annotations

import json
import shutil
import subprocess

import pandas as pd
import pytest
import ray
import soundfile as sf

import crossemo
from crossemo import cli, pipeline
from crossemo.synthetic import make_demo_corpora

FAST = {name: {"n_estimators": 10} for name in ("rf", "norm_neutral")}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


def test_runs_are_recorded_reuse_work_and_compare(tmp_path, capsys):
    manifests = make_demo_corpora(tmp_path / "corpora", speakers=2, per_emotion=2)
    out = tmp_path / "out"

    def config() -> pipeline.RunConfig:
        specs = [pipeline.CorpusSpec(recipe="manifest", uri=str(p)) for p in manifests.values()]
        return pipeline.RunConfig(out=str(out), corpora=specs, methods="norm_neutral", method_params=FAST, progress=False)

    first, _, _ = pipeline.run(config())
    unchanged, _, _ = pipeline.run(config())
    # the next scheduled run finds a new recording in the target corpus
    studio = manifests["synth_studio"]
    shutil.copy(studio.parent / "s01" / "joy_00.wav", studio.parent / "s01" / "late.wav")  # then made quieter: new content
    table = pd.read_csv(studio)
    signal_path = studio.parent / "s01" / "late.wav"
    data, rate = sf.read(signal_path)
    sf.write(signal_path, data * 0.5, rate)
    pd.concat([table, pd.DataFrame({"path": ["s01/late.wav"], "speaker": ["s01"], "emotion": ["joy"]})]).to_csv(studio, index=False)
    grown, _, _ = pipeline.run(config())

    records = {}
    for run in (first, unchanged, grown):
        path = out / "runs" / run.run_id / "run.json"
        records[run.run_id] = json.loads(path.read_text())
    record = records[first.run_id]
    assert record["code_version"].startswith("0.1.0")
    assert set(record["corpora"]) == {"synth_studio", "synth_phone"}
    assert record["settings"]["methods"] == "norm_neutral"
    assert record["timings"]["total_wall_seconds"] > 0 and record["timings"]["evaluation_wall_seconds"] > 0
    assert records[unchanged.run_id]["counts"]["tasks_reused"] == records[unchanged.run_id]["counts"]["tasks"]
    assert records[unchanged.run_id]["counts"]["extracted"] == 0
    grown_counts = records[grown.run_id]["counts"]
    assert grown_counts["extracted"] == 1
    # scenario 2 on the untouched target is reused; everything touching synth_studio is recomputed
    assert 0 < grown_counts["tasks_reused"] < grown_counts["tasks"]

    assert cli.main(["report", str(out), "--compare", first.run_id, unchanged.run_id]) == 0
    same = capsys.readouterr().out
    assert "settings, code and corpora: unchanged" in same and "results: identical" in same
    assert f"(the later run reused {records[unchanged.run_id]['counts']['tasks_reused']}, features reused {records[unchanged.run_id]['counts']['features_reused']})" in same
    # A run of evaluate extracted nothing: it is said so, not shown as "?".
    assert cli.main(["evaluate", "--features", str(out / "features"), "--out", str(out), "--methods", "norm_neutral", "--no-progress"]) == 0
    evaluated = max(path.parent.name for path in (out / "runs").glob("*/run.json"))
    capsys.readouterr()
    assert cli.main(["report", str(out), "--compare", first.run_id, evaluated]) == 0
    from_store = capsys.readouterr().out
    assert "features read from a store)" in from_store and "?" not in from_store, from_store
    # It recorded no corpus fingerprints: that is said once, not listed as every corpus entry changed.
    assert f"corpora: not compared (run {evaluated} recorded no corpus fingerprints: an evaluate of a feature store" in from_store and "corpora." not in from_store, from_store

    assert cli.main(["report", str(out), "--compare", first.run_id, grown.run_id]) == 0
    changed = capsys.readouterr().out
    assert "corpora.synth_studio.utterances: 16 → 17" in changed
    assert "synth_studio" in changed.split("results")[-1]

    assert cli.main(["report", str(out), "--compare", first.run_id, "nosuch"]) == 2
    assert "no run 'nosuch'" in capsys.readouterr().err
    assert cli.main(["report", str(out), "--compare", first.run_id, first.run_id + "/"]) == 2
    assert f"--compare names run {first.run_id} twice" in capsys.readouterr().err

    # the report is rebuilt from results alone
    shutil.rmtree(out / "report")
    assert cli.main(["report", str(out)]) == 0
    assert (out / "report" / "index.html").is_file() and (out / "report" / "table3.csv").is_file()


def test_a_comparison_names_the_pairs_one_run_lacks_and_changes_in_uar():
    """Pairs a run added are a change of plan, not cells that moved from nothing; a verdict moves in UAR, which is compared too."""
    from crossemo.report import compare

    run_a = {"run_id": "A", "pairs": [["a", "b"]], "counts": {}}
    run_b = {"run_id": "B", "pairs": [["a", "b"], ["b", "a"]], "counts": {}}
    moved = pd.DataFrame({"metric": ["uar"], "table": ["table3"], "source": ["a"], "target": ["b"], "column": ["rf"], "before": [50.0], "after": [52.0], "change": [2.0]})
    text = compare.render(run_a, run_b, moved)
    assert "pairs only the later run evaluated: b:a" in text and "results that changed (UAR %, 1 cells):" in text and "accuracy %" not in text, text
    same = compare.render(run_a, run_b, moved.assign(after=50.0, change=0.0))
    assert same.endswith("results: identical for the pairs both runs evaluated"), same
    assert compare.result_changes(pd.DataFrame(), [["a", "b"]], pd.DataFrame(), [["b", "a"]]).empty


def test_the_code_version_says_when_the_package_differs_from_its_commit(tmp_path, monkeypatch):
    """A run of uncommitted code was recorded under the commit's name alone."""
    package = tmp_path / "checkout" / "crossemo"
    package.mkdir(parents=True)
    (package / "pipeline.py").write_text("rule = 1\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=package.parent, check=True)
    subprocess.run([*git, "add", "."], cwd=package.parent, check=True)
    subprocess.run([*git, "commit", "-qm", "one"], cwd=package.parent, check=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=package, capture_output=True, text=True, check=True).stdout.strip()
    monkeypatch.setattr(pipeline, "__file__", str(package / "pipeline.py"))
    assert pipeline.code_version() == f"{crossemo.__version__}+{commit}"
    (package / "pipeline.py").write_text("rule = 2\n")
    assert pipeline.code_version() == f"{crossemo.__version__}+{commit}.dirty"


def test_a_comparison_names_a_change_of_the_feature_cache_generation(monkeypatch):
    """New decode rules re-extract every file; the comparison named only the code version."""
    from crossemo import audio, featurestore
    from crossemo.features import FeatureExtractor
    from crossemo.report import compare

    extractor = FeatureExtractor("is10")

    def recorded(**settings) -> dict:
        # As run.json holds it: the record goes through JSON.
        return json.loads(json.dumps({"cache_generation": featurestore.CacheGeneration.of(extractor, audio.AnalysisSettings(**settings)).describe()}, default=str))

    before = recorded()
    assert compare.setting_changes(before, recorded()) == []
    monkeypatch.setattr(audio, "DECODE_RULES_VERSION", "next")
    changes = compare.setting_changes(before, recorded(channel="first"))
    assert ("cache_generation.decode.rules", before["cache_generation"]["decode"]["rules"], "next") in changes
    assert ("cache_generation.decode.channel", "mean", "first") in changes and any(name == "cache_generation.id" for name, _, _ in changes)


def test_a_rebuilt_report_describes_the_corpora_of_its_own_run(tmp_path):
    """A later run into the same output with other corpora replaced the store's manifest, and the rebuilt page showed its corpora (a new user's trial)."""
    manifests = make_demo_corpora(tmp_path / "corpora", speakers=2, per_emotion=1)
    other = make_demo_corpora(tmp_path / "other", speakers=2, per_emotion=1)
    out = tmp_path / "out"
    specs = [pipeline.CorpusSpec(recipe="manifest", uri=str(p)) for p in manifests.values()]
    record, _, _ = pipeline.run(pipeline.RunConfig(out=str(out), corpora=specs, methods="rf", method_params=FAST, progress=False))
    kept = pd.read_parquet(out / "runs" / record.run_id / "manifest.parquet")
    assert set(kept["corpus"]) == {"synth_studio", "synth_phone"}
    page = (out / "report" / "index.html").read_text(encoding="utf-8")
    # Features only, of a corpus named otherwise: the store's tables now describe it, and no result is recorded.
    shutil.copy(other["synth_phone"], other["synth_phone"].parent / "third.csv")
    pipeline.run(pipeline.RunConfig(out=str(out), corpora=[pipeline.CorpusSpec(recipe="manifest", uri=str(other["synth_phone"].parent / "third.csv"))], progress=False), evaluate=False)
    assert set(pd.read_parquet(out / "features" / "_manifest.parquet")["corpus"]) == {"third"}
    assert cli.main(["report", str(out)]) == 0
    rebuilt = (out / "report" / "index.html").read_text(encoding="utf-8")
    assert ">third<" not in rebuilt and ">synth_phone<" in rebuilt
    assert rebuilt == page


def test_evaluate_records_the_stores_feature_set_and_corpora_and_damaged_files_are_named(tmp_path, capsys):
    """A config's feature set and corpora that evaluate did not use were recorded as the run's; damaged records, results and cache files were tracebacks."""
    manifests = make_demo_corpora(tmp_path / "corpora", speakers=2, per_emotion=2)
    out = tmp_path / "out"
    corpora = [arg for path in manifests.values() for arg in ("--corpus", f"manifest={path}")]
    assert cli.main(["run", *corpora, "--methods", "majority", "--out", str(out), "--no-progress"]) == 0
    config = tmp_path / "other.toml"
    phone = manifests["synth_phone"]
    config.write_text(f'feature_set = "egemaps"\n[corpora]\nravdess = "/nonexistent"\nmanifest = "{phone}"\n')
    assert cli.main(["evaluate", "--features", str(out / "features"), "--out", str(out / "again"), "--config", str(config), "--methods", "majority", "--no-progress"]) == 0
    (record_path,) = (out / "again" / "runs").glob("*/run.json")
    record = json.loads(record_path.read_text())
    assert record["settings"]["feature_set"] == "is10"
    assert [spec["name"] for spec in record["settings"]["corpora"]] == ["synth_phone"]
    capsys.readouterr()

    def refused(argv: list[str], says: str) -> None:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and says in err, err

    # Training from that evaluation needs the corpora it could not record.
    refused(
        ["train", "--from-run", str(out / "again"), "--target", "synth_studio", "--method", "rf", "--out", str(tmp_path / "model")],
        "evaluated a feature store and did not record where its audio is: give every corpus with --corpus NAME=URI",
    )

    result = sorted((out / "results").rglob("*.parquet"))[0]
    kept = pd.read_parquet(result)
    result.write_bytes(b"garbage")
    refused(["report", str(out)], f"result file {result} cannot be read (")
    result.unlink()
    refused(["report", str(out)], f"result file {result} is missing; running the evaluation again into the same --out recomputes it")
    assert cli.main(["evaluate", "--features", str(out / "features"), "--out", str(out), "--methods", "majority", "--no-progress"]) == 0
    timings = ["cpu_seconds", "wall_seconds"]
    pd.testing.assert_frame_equal(pd.read_parquet(result).drop(columns=timings), kept.drop(columns=timings))
    assert cli.main(["report", str(out)]) == 0

    bogus = out / "runs" / "zzzz" / "run.json"
    bogus.parent.mkdir()
    bogus.write_text("{")
    refused(["report", str(out)], f"run record {bogus} is not a crossemo run record (")
    refused(["report", str(out), "--compare", "zzzz", record["run_id"]], f"run record {bogus} is not a crossemo run record")
    bogus.unlink()

    cache_file = sorted((out / "cache").rglob("*.parquet"))[0]
    intact = cache_file.read_bytes()
    # Its magic bytes intact, its footer not: Arrow raises a plain OSError ("Couldn't deserialize thrift"), not ArrowInvalid.
    cache_file.write_bytes(intact[:-20] + bytes(range(12)) + intact[-8:])
    refused(["run", *corpora, "--methods", "majority", "--out", str(out), "--no-progress"], f"cache file {cache_file} cannot be read (OSError")
    cache_file.write_bytes(b"junk")
    refused(["run", *corpora, "--methods", "majority", "--out", str(out), "--no-progress"], "; remove it: the recordings it held are extracted again")
    (out / "features" / "_manifest.parquet").write_bytes(b"junk")
    refused(["evaluate", "--features", str(out / "features"), "--out", str(out), "--methods", "majority", "--no-progress"], "_manifest.parquet cannot be read (")
