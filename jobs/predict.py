"""Labelling audio with a model bundle, as a Ray job.

Submitted from the repository root::

    ray job submit --runtime-env jobs/runtime_env.yaml -- \\
        python jobs/predict.py --model s3://bucket/models/mine --audio s3://bucket/calls/ --out s3://bucket/labels --no-progress

It takes exactly the flags of ``crossemo predict`` and does the same work:
each shard of files is decoded, extracted through the content-keyed feature
cache and labelled by a Ray task that writes ``<out>/predictions/part-<shard
key>.parquet``. A resubmitted job skips the finished shards. The log lines
and exit statuses are those of ``jobs/run.py`` (0 done, 1 failure, 2 bad
input with no task started, 130 stopped by ``ray job stop``).
"""

from __future__ import annotations

import os
import sys
import time

import run as job  # noqa: I001 (jobs/run.py, the job runner both jobs share; it puts this checkout on sys.path)

from crossemo import model_commands  # noqa: E402 (after the runner puts this checkout first)


def label(argv: list[str], state: job.JobState) -> int:
    """Check the bundle and the audio, label every file, log the start and the summary."""
    started = time.perf_counter()
    args = job.parse_args(argv, "predict")
    for flag in ("--out", "--store"):
        job.check_kept(flag, getattr(args, flag.lstrip("-")))
    state.out = args.out
    setup = model_commands.predict_setup(args)
    job.log.info(
        "start: model %s (%s, %s); audio %s (%d files); segments %s; out %s; cluster %s",
        args.model, setup.loaded.model_id, setup.loaded.metadata["method"], ", ".join(args.audio), len(setup.listing.files),
        setup.segmentation.rule() if setup.segmentation else "none", args.out, args.address or os.environ.get("RAY_ADDRESS") or "in-process",
    )
    for warning in setup.listing.warnings:
        job.log.warning("%s", warning)
    summary = model_commands.label(args, setup)
    model_commands.print_labelling(summary, args.out, setup.loaded.model_id)
    for warning in model_commands.labelling_warnings(summary, setup):
        job.log.warning("%s", warning)
    job.log.info(
        "done: %d files; %d labelled; %d not usable; %d shards written, %d reused; %d earlier labels dropped with replaced parts; %.1f s",
        summary.files, summary.labelled, summary.rejected, summary.shards, summary.reused_shards, summary.dropped_labels, time.perf_counter() - started,
    )
    return job.EXIT_FAILED if model_commands.labelling_status(summary, args.out) else job.EXIT_DONE


if __name__ == "__main__":
    sys.exit(job.run_job(label))
