"""The ``crossemo`` command line.

Every command validates its input before any Ray work starts: a bad setting
ends with one line naming the cause and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd

from crossemo import bundle, corpora, featurestore, inputs, methods, model_commands, orchestration, pipeline, protocol, storage, training
from crossemo.labels import EMOTIONS
from crossemo.report import verdict

EXIT_BAD_INPUT = 2
BAD_INPUT_ERRORS = (
    pipeline.ConfigError, corpora.CorpusError, protocol.ProtocolError, storage.StorageError,
    training.TrainingError, inputs.InputError, bundle.BundleError, orchestration.ClusterError,
)
"""What crossemo reports as bad input: one line, exit status 2."""

DEMO_METHOD_PARAMS = {
    # Smaller models so the demo finishes in a few minutes on a laptop; the
    # study's settings (1000 trees, full networks) are the defaults elsewhere.
    name: {"n_estimators": 100} for name in ("rf", "multitask", "norm_neutral", "norm_distribution", "speaker_norm")
}


def _add_run_options(parser: argparse.ArgumentParser, *, out_help: str = "output folder or s3:// prefix") -> None:
    parser.add_argument("--corpus", action="append", default=[], metavar="NAME=URI", help="a corpus: recipe name and its root (local folder or s3://…); repeat for more")
    parser.add_argument("--out", help=out_help)
    parser.add_argument("--feature-set", dest="feature_set", help="is10 (default), egemaps, compare, emobase, or a path to an openSMILE .conf")
    parser.add_argument("--analysis-rate", dest="analysis_rate", type=int, help="every file is resampled to this rate in Hz before features are computed (default 16000)")
    parser.add_argument("--channel", type=pipeline.channel_rule, help="how several channels become one: mean (default; see the README's Mono rule), loudest (most speech-band energy: for a dead or humming channel), first, or a channel index")
    _add_common(parser)


def _add_evaluation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pairs", help="all (default) or SRC:TGT,SRC:TGT; a source may pool corpora: A+B:TGT")
    parser.add_argument("--methods", help="all (default) or m1,m2 (majority and rf always run)")
    parser.add_argument("--seed", type=int, help="random seed for every model (default 0)")
    parser.add_argument("--seeds", type=int, help="run every stochastic method under this many seeds, from --seed on, each as its own tasks; the tables show the spread over seeds (default 1)")


def _add_storage_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage-option", dest="storage_option", action="append", default=[], metavar="KEY=VALUE", help="fsspec/s3fs option, e.g. endpoint_url=http://…; repeatable")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else Ray in-process)")
    _add_storage_option(parser)
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=True, help="no progress bars (for logs)")


def method_summaries() -> list[tuple[str, str, str]]:
    """``(name, role, one line on what it does)`` for every method, from its module's docstring."""
    rows = []
    for name, cls in methods.METHODS.items():
        first = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]
        line = first.split(": ", 1)[1] if first.startswith(f"``{name}``: ") else first
        if name in protocol.BASELINES:
            role = "baseline"
        elif name in protocol.STUDY_METHODS:
            role = "study"
        else:
            role = "beyond"
        if name in protocol.TARGET_ONLY_METHODS:
            role += ", twin"
        rows.append((name, role, line.replace("``", "")))
    return rows


def print_methods() -> None:
    rows = method_summaries()
    width = max(len(name) for name, _, _ in rows) + 2
    for name, role, line in rows:
        mark = "*" if name == methods.RECOMMENDED else " "
        print(f"{mark} {name:<{width}}{role:<14}{line}")
    print(
        f"\n* recommended: {methods.RECOMMENDED} (the README says why). baseline: in every run; study: the study's transfer methods; "
        "beyond: added by crossemo; twin: also trained on the target speaker alone (scenario 2) for the verdict."
    )


ERROR_PREFIX = "crossemo: error: "
"""How every bad-input line starts, whether argparse or a check found it."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a command line that does not parse reported as every other bad input: one line, exit status 2."""

    def error(self, message: str) -> NoReturn:
        # The prefix of every other error; the sub-command is in the pointer to its help.
        self.exit(EXIT_BAD_INPUT, f"{ERROR_PREFIX}{message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    # Sub-command parsers take the parser's own class.
    parser = OneLineParser(prog="crossemo", description="Transfer speech-emotion recognition from public corpora to your own speakers.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("corpora", help="list the corpus recipes")
    commands.add_parser("methods", help="list the methods, what each does, and the recommended one")
    features = commands.add_parser("features", help="extract openSMILE features into <out>/features")
    _add_run_options(features)
    evaluate = commands.add_parser("evaluate", help="run the protocol on a feature store and write the tables")
    evaluate.add_argument("--features", required=True, help="a feature store folder (<out>/features of `crossemo features`)")
    evaluate.add_argument("--out", required=True, help="output folder or s3:// prefix")
    evaluate.add_argument("--config", help="a TOML file with the run's settings (method_params, seeds …; flags override it); see configs/")
    _add_evaluation_options(evaluate)
    _add_common(evaluate)
    run = commands.add_parser("run", help="features, evaluation and tables in one go")
    _add_run_options(run)
    _add_evaluation_options(run)
    run.add_argument("--config", help="a TOML file with the same settings (flags override it); see configs/")
    report = commands.add_parser("report", help="rebuild the tables and page of the latest run from its results, or compare two runs")
    report.add_argument("out", help="the run's output folder or s3:// prefix")
    report.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"), help="show what changed between two run ids (see <out>/runs/)")
    _add_storage_option(report)
    model_commands.add_train_parser(commands, _add_run_options)
    model_commands.add_predict_parser(commands, _add_common)
    demo = commands.add_parser("demo", help="run everything on a small synthetic data set (its numbers mean nothing)")
    demo.add_argument("--out", default="crossemo-demo", help="where to write the demo (default ./crossemo-demo)")
    demo.add_argument("--no-progress", dest="progress", action="store_false", default=True)
    return parser


def config_from(args: argparse.Namespace) -> pipeline.RunConfig:
    """Merge a config file (if any) with the flags; flags win."""
    config = pipeline.RunConfig.from_toml(args.config) if getattr(args, "config", None) else pipeline.RunConfig()
    if getattr(args, "corpus", None):
        config.corpora = [pipeline.CorpusSpec.parse(text) for text in args.corpus]
    for name in ("out", "feature_set", "analysis_rate", "channel", "pairs", "methods", "seed", "seeds", "address"):
        value = getattr(args, name, None)
        if value is not None:
            setattr(config, name, value)
    config.storage_options.update(pipeline.parse_storage_options(args.storage_option))
    config.progress = args.progress
    return config


def print_corpora() -> None:
    width = max(len(name) for name in corpora.RECIPES)
    for name, recipe in corpora.RECIPES.items():
        print(f"{name:<{width}}  {recipe.summary}")


def print_extraction(summary, seconds: float) -> None:
    """The one-screen summary of a feature extraction."""
    print()
    analysis_rate = summary.generation.decode["analysis_rate"]
    print(f"feature set {summary.feature_set_id} at {analysis_rate} Hz (cache generation {summary.generation.id}): {featurestore.count(summary.extracted, 'file')} extracted, {summary.reused} reused from the cache (features or a cached rejection), in {seconds:.1f} s")
    rows = []
    for corpus, frame in summary.features.items():
        counts = frame["emotion"].value_counts()
        rows.append({"corpus": corpus, "speakers": frame["speaker"].nunique(), **{e: int(counts.get(e, 0)) for e in EMOTIONS}, "total": len(frame)})
    if rows:
        print(pd.DataFrame(rows).to_string(index=False))
    model_commands.print_unused(summary.rejected, where="each with its reason in features/_rejected.parquet")


def print_tables(result_tables: dict[str, pd.DataFrame], out: str) -> None:
    if not result_tables:
        return
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print("\nTable 2 (accuracy %):")
        print(result_tables["table2"].to_string(index=False))
        print("\nTable 3 (accuracy %):")
        print(result_tables["table3"].to_string(index=False))
        if "table3_uar" in result_tables:
            # The verdict's figures: with unbalanced classes they are not the accuracies above.
            print("\nTable 3 (UAR %, the verdict's measure):")
            print(result_tables["table3_uar"].to_string(index=False))
    print(f"\nTables (CSV, tables.md, verdict.csv) and the page index.html in {storage.join(out, 'report')}")
    print_verdict(result_tables.get("verdict"))


def print_verdict(table: pd.DataFrame | None) -> None:
    """The verdict per pair in words, the summary's last lines."""
    if table is None or table.empty:
        print(f"\nNo verdict: the recommended method {methods.RECOMMENDED} did not run; add it to --methods (or use --methods all).")
        return
    print(f"\nVerdict ({methods.RECOMMENDED} against the best model trained on the target alone in this run: the Baseline RF and the target-only twins that ran):")
    for _, row in table.iterrows():
        print(f"  {verdict.sentence(row)}")


def run_and_print(config: pipeline.RunConfig, *, evaluate: bool) -> int:
    """Run, then print the extraction summary, warnings and tables."""
    started = time.perf_counter()
    try:
        record, extraction, result_tables = pipeline.run(config, evaluate=evaluate)
    except pipeline.EvaluationNotRun as stopped:
        _print_run(stopped.record, stopped.extraction, config.out, started)
        raise
    _print_run(record, extraction, config.out, started)
    print_tables(result_tables, config.out)
    return 0


def _print_run(record: pipeline.RunRecord, extraction: Any, out: str, started: float) -> None:
    """The extraction summary, the warnings (on stderr) and where the run is recorded."""
    print_extraction(extraction, extraction.wall_seconds)
    model_commands.print_warnings(record.warnings)
    evaluated = " (features only: the evaluation did not run)" if record.stopped else ""
    print(f"\nrun {record.run_id} recorded in {storage.join(out, 'runs', record.run_id)}{evaluated} ({time.perf_counter() - started:.1f} s)")


def command_evaluate(args: argparse.Namespace) -> int:
    config = config_from(args)
    pipeline.check_settings(config)
    try:
        features = featurestore.load_features(args.features, storage_options=config.fs_options)
    except ValueError as error:  # tables of mixed feature sets, or a file that is not Parquet
        raise pipeline.ConfigError(f"--features {args.features}: {error}") from None
    datasets = pipeline.datasets_from(features)
    # The record names the corpora evaluated: a config's others are not this run's.
    config.corpora = [spec for spec in config.corpora if spec.name in datasets]
    pipeline.plan_evaluation(datasets, config, features_uri=args.features)  # fails fast, before Ray
    record = pipeline.new_record(config, manifests=[], feature_set_id=featurestore.feature_set_of(args.features, storage_options=config.fs_options))
    pipeline.record_feature_store(record, featurestore.generation_of(args.features, storage_options=config.fs_options), storage_options=config.fs_options)
    with pipeline.recorded_if_it_fails(record, config, time.perf_counter()):
        result_tables = pipeline.evaluate_and_report(datasets, config, record, features_uri=args.features)
    pipeline.write_record(record, config.out, storage_options=config.fs_options)
    print_tables(result_tables, config.out)
    return 0


def command_report(args: argparse.Namespace) -> int:
    options = pipeline.parse_storage_options(args.storage_option) or None
    if args.compare:
        from crossemo.report import compare

        run_a, run_b = (compare.read_run(args.out, run_id, storage_options=options) for run_id in args.compare)
        for run in (run_a, run_b):
            if not run.get("result_uris"):
                why = f"it stopped: {run['stopped']}" if run.get("stopped") else "a features-only run"
                raise pipeline.ConfigError(f"run {run['run_id']} has no results to compare ({why})")
        if run_a["run_id"] == run_b["run_id"]:
            # Compared with itself a run would read as a re-run that reused nothing.
            raise pipeline.ConfigError(f"--compare names run {run_a['run_id']} twice; give two run ids (see {storage.join(args.out, 'runs')})")
        results_a, results_b = (pipeline.read_results(pipeline.result_files(run, args.out), storage_options=options) for run in (run_a, run_b))
        print(compare.render(run_a, run_b, compare.result_changes(results_a, run_a["pairs"], results_b, run_b["pairs"])))
        return 0
    storage.check_writable(storage.join(args.out, "report"), storage_options=options)
    record = pipeline.latest_record(args.out, storage_options=options)
    print_tables(pipeline.write_report(args.out, record, storage_options=options), args.out)
    return 0


def command_demo(args: argparse.Namespace) -> int:
    from crossemo.synthetic import make_demo_corpora

    out = Path(args.out).resolve()
    storage.check_writable(str(out))
    banner = "SYNTHETIC DEMO: tones shaped like emotions, not speech. Its numbers mean NOTHING about emotion recognition."
    print("=" * len(banner), banner, "=" * len(banner), sep="\n")
    manifests = make_demo_corpora(out / "corpora")
    config = pipeline.RunConfig(
        out=str(out / "run"),
        corpora=[pipeline.CorpusSpec(recipe="manifest", uri=str(path)) for path in manifests.values()],
        method_params=DEMO_METHOD_PARAMS,
        progress=args.progress,
    )
    status = run_and_print(config, evaluate=True)
    print("\n" + banner)
    return status


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "corpora":
            print_corpora()
            return 0
        if args.command == "methods":
            print_methods()
            return 0
        if args.command == "features":
            return run_and_print(config_from(args), evaluate=False)
        if args.command == "run":
            return run_and_print(config_from(args), evaluate=True)
        if args.command == "evaluate":
            return command_evaluate(args)
        if args.command == "report":
            return command_report(args)
        if args.command == "train":
            return model_commands.command_train(args, config_from)
        if args.command == "predict":
            return model_commands.command_predict(args)
        return command_demo(args)
    except BAD_INPUT_ERRORS as error:
        print(f"{ERROR_PREFIX}{error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("crossemo: interrupted; finished work is kept and the next run resumes from it", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
