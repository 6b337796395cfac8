"""The crossemo study as a Ray job.

Submitted from the repository root::

    ray job submit --runtime-env jobs/runtime_env.yaml -- \\
        python jobs/run.py --config configs/study.toml --out s3://bucket/crossemo/study --no-progress

It takes exactly the flags of ``crossemo run`` (they are parsed by the CLI's
own parser) and does the same work: features, the evaluation protocol and the
tables, recorded under ``<out>/runs/<run id>/``. The job's driver joins the
cluster it was submitted to (Ray sets ``RAY_ADDRESS`` for it); every task runs
on the cluster's workers.

What it leaves for an operator: a timestamped (UTC) log line when it starts
(output, corpora, planned pairs, methods) and when it ends (run id, pairs,
tasks, utterances, time), and an exit status. ``ray job status`` shows 0 as
SUCCEEDED, any other status as FAILED (naming it), and a job ended by
``ray job stop`` as STOPPED:

    0    done: the tables are written and the run recorded.
    1    unexpected failure: the traceback is in the job log. Finished work is
         kept; resubmitting the same job resumes from it.
    2    bad input (a flag, a setting in the config file, a corpus that cannot
         be read as its recipe expects): one line naming the cause, and no
         task was started.
    130  interrupted (Ctrl-C, or ``ray job stop``, which sends SIGTERM).
         Finished work is kept; resubmitting resumes from it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Run the crossemo that travelled with this script (the job's working_dir, or
# this checkout) even where another version is installed.
_CHECKOUT = Path(__file__).resolve().parents[1]
if (_CHECKOUT / "crossemo" / "__init__.py").is_file() and str(_CHECKOUT) not in sys.path:
    sys.path.insert(0, str(_CHECKOUT))

from crossemo import cli, orchestration, pipeline, protocol, storage  # noqa: E402

EXIT_DONE = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = cli.EXIT_BAD_INPUT
EXIT_INTERRUPTED = 130

log = logging.getLogger("crossemo.job")


class BadArguments(ValueError):
    """The command line does not parse; the message is argparse's one line."""


def parse_args(argv: Sequence[str], command: str = "run") -> argparse.Namespace:
    """Parse the flags of ``crossemo <command>`` with the CLI's own parser.

    Raises:
        BadArguments: the flags do not parse; the message is the one line
            argparse would print after its usage text.
        SystemExit: ``--help`` was asked for (status 0, help on stdout).
    """
    parser = cli.build_parser()
    messages = io.StringIO()
    try:
        with contextlib.redirect_stderr(messages):
            return parser.parse_args([command, *argv])
    except SystemExit as exit_:
        if not exit_.code:
            raise
        lines = [line for line in messages.getvalue().splitlines() if line.strip()]
        # The log line says "bad input: " already.
        raise BadArguments(lines[-1].removeprefix(cli.ERROR_PREFIX) if lines else "the command line does not parse") from None


def planned_pairs(config: pipeline.RunConfig) -> list[tuple[str, str]]:
    """The corpus pairs the run will evaluate, as the protocol will form them.

    Raises:
        protocol.ProtocolError: the pairs name an unknown corpus, or too few corpora.
    """
    return protocol.parse_pairs(config.pairs, [spec.name for spec in config.corpora])


def working_copy() -> Path | None:
    """The temporary folder holding Ray's copy of this job's ``working_dir``, or ``None`` outside such a job.

    Ray hands a submitted job's runtime environment to its driver in
    ``RAY_JOB_CONFIG_JSON_ENV_VAR`` and starts it in the unpacked copy, under
    the session's ``runtime_resources`` folder, all of which goes with the
    session; that folder is returned, else (another layout) the copy. An
    entrypoint that changed folder first is not in the copy: ``None``.
    """
    try:
        runtime_env = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}").get("runtime_env") or {}
    except (ValueError, AttributeError):
        return None
    if not isinstance(runtime_env, dict) or not runtime_env.get("working_dir"):
        return None
    here = Path.cwd().resolve()
    if here != _CHECKOUT and _CHECKOUT not in here.parents:
        return None
    return next((folder for folder in (here, *here.parents) if folder.name == "runtime_resources"), here)


def check_kept(flag: str, uri: str | None) -> None:
    """Refuse an output the job would write into Ray's copy of its working directory.

    Ray deletes that copy with its session, so a relative ``--out`` there
    (or a config file's relative ``out``) would seem to succeed and be lost.

    Raises:
        pipeline.ConfigError: ``uri`` is a local path inside :func:`working_copy`.
    """
    copy = working_copy()
    if copy is None or not uri or not storage.is_local(uri):
        return
    path = Path(storage.filesystem(uri)[1]).resolve()
    if path == copy or copy in path.parents:
        raise pipeline.ConfigError(
            f"{flag} {uri} lies in Ray's temporary copy of this job's working directory ({copy}), which Ray deletes with its session: "
            "give an absolute path on storage the cluster keeps, or an s3:// URI"
        )


class _UTCFormatter(logging.Formatter):
    converter = time.gmtime


def configure_logging() -> None:
    """Timestamped lines: information on stdout, errors (and tracebacks) on stderr."""
    formatter = _UTCFormatter("%(asctime)s.%(msecs)03dZ %(levelname)s crossemo-job: %(message)s", "%Y-%m-%dT%H:%M:%S")
    info = logging.StreamHandler(sys.stdout)
    info.setFormatter(formatter)
    info.addFilter(lambda record: record.levelno < logging.ERROR)
    errors = logging.StreamHandler(sys.stderr)
    errors.setFormatter(formatter)
    errors.setLevel(logging.ERROR)
    log.handlers[:] = [info, errors]
    log.setLevel(logging.INFO)
    log.propagate = False
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).splitlines()) or type(error).__name__


class JobState:
    """What a job's work tells the runner as it goes: where its finished work is kept."""

    out: str | None = None


def run_job(work: Callable[[list[str], JobState], int], argv: Sequence[str] | None = None) -> int:
    """Run ``work`` as a job: the log lines, and the exit status of the module docstring.

    Args:
        work: does the job and logs its start and end; sets the state's ``out``
            once known; raises what :data:`cli.BAD_INPUT_ERRORS` names for bad input.
        argv: the job's flags (default: the command line).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    configure_logging()
    started = time.perf_counter()
    state = JobState()
    previous = signal.signal(signal.SIGTERM, orchestration.interrupt_on_signal)
    try:
        return work(argv, state)
    except (BadArguments, *cli.BAD_INPUT_ERRORS) as error:
        log.error("bad input: %s", _one_line(error))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        kept = f"; finished work is kept in {state.out} and a resubmitted job resumes from it" if state.out else ""
        log.error("interrupted by %s after %.1f s%s", orchestration.interrupting_signal(), time.perf_counter() - started, kept)
        return EXIT_INTERRUPTED
    except Exception:
        kept = f" in {state.out}" if state.out else ""
        log.exception("failed after %.1f s (finished work is kept%s; a resubmitted job resumes from it)", time.perf_counter() - started, kept)
        return EXIT_FAILED
    finally:
        signal.signal(signal.SIGTERM, previous)


def study(argv: list[str], state: JobState) -> int:
    """The study: features, evaluation, tables; logs its start and end."""
    started = time.perf_counter()
    config = cli.config_from(parse_args(argv))
    check_kept("--out", config.out)
    state.out = config.out
    pairs = planned_pairs(config)
    log.info(
        "start: out %s; corpora %s; %d pairs planned (%s); methods %s; feature set %s; cluster %s",
        config.out or "(none)", ", ".join(f"{s.name}={s.uri}" for s in config.corpora) or "(none)", len(pairs),
        config.pairs, config.methods, config.feature_set, config.address or os.environ.get("RAY_ADDRESS") or "in-process",
    )
    try:
        record, extraction, tables = pipeline.run(config, evaluate=True)
    except pipeline.EvaluationNotRun as stopped:
        # What was extracted is kept and recorded: the log shows it before the bad-input line.
        _log_extraction(stopped.record, stopped.extraction)
        log.info("run %s recorded in %s as features only", stopped.record.run_id, config.out)
        raise
    _log_extraction(record, extraction)
    cli.print_tables(tables, config.out)
    counts = record.counts
    log.info(
        "done: run %s in %s; %d pairs; %d tasks (%d reused); %d utterances (%d extracted, %d reused, %d rejected); %.1f s",
        record.run_id, config.out, len(record.pairs), counts.get("tasks", 0), counts.get("tasks_reused", 0),
        counts.get("utterances", 0), counts.get("extracted", 0), counts.get("features_reused", 0), counts.get("rejected", 0),
        time.perf_counter() - started,
    )
    return EXIT_DONE


def _log_extraction(record: pipeline.RunRecord, extraction: Any) -> None:
    """The extraction summary (stdout) and the run's warnings (log)."""
    cli.print_extraction(extraction, extraction.wall_seconds)
    for warning in record.warnings:
        log.warning("%s", warning)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study as a job; returns the exit status (see the module docstring)."""
    return run_job(study, argv)


if __name__ == "__main__":
    sys.exit(main())
