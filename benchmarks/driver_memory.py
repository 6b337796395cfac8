"""Benchmark: where ``crossemo predict``'s driver memory goes, stage by stage, on the synthetic load.

Labels N synthetic files (the demo's tones, 0.5 s each, 10 speakers per
corpus) with a model bundle on local Ray, from a fresh store and output, and
prints the driver's resident memory, and its private part (its own heap;
the rest is mostly pages of Ray's shared object store it touched), before
each stage of :func:`crossemo.orchestration.label_files` (every wave's), the
peak during the stage (sampled every 50 ms) and after it, plus the memory of
the list of files itself and the most Python objects held during extraction
(``tracemalloc``), after every wave what the allocators hold (Python's live
blocks, glibc's heap bytes in use and free but kept); at the end, the peaks
over the whole labelling:

    python benchmarks/driver_memory.py --model MODEL [--files 20000] [--work DIR]

Run it at two sizes, each in a fresh process: whatever grows between them
grows with the number of files.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import multiprocessing
import shutil
import sys
import tempfile
import tracemalloc
from pathlib import Path

from crossemo import audio, bundle, featurestore, inputs, orchestration, prediction, storage
from crossemo.features import FeatureExtractor
from crossemo.synthetic import make_demo_corpora
from sampling import Sampler  # benchmarks/ is on the path when this runs as a script


class DriverMemory(Sampler):
    """Samples this process's resident memory in the background: all of it, and its private (anonymous) part.

    Resident memory also counts the pages of Ray's shared object store that
    this process has touched (``RssShmem`` in ``/proc/self/status``): those
    belong to the object store, whose size Ray bounds, not to the driver.
    The private part is ``RssAnon``: the driver's own heap.
    """

    def __init__(self, interval: float = 0.1):
        super().__init__(interval)
        self.reset()

    def reset(self) -> None:
        """Start new peaks from now."""
        self.peak, self.peak_private = resident_parts()

    def sample(self) -> None:
        total, private = resident_parts()
        self.peak, self.peak_private = max(self.peak, total), max(self.peak_private, private)


def resident_parts() -> tuple[int, int]:
    """This process's resident memory and its anonymous (private heap) part, in bytes (Linux)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["RssAnon"].split()[0]) * 1024


def megabytes(parts: tuple[int, int]) -> str:
    """Resident memory and its private part, as ``"T MB (P private)"``."""
    return f"{parts[0] / 2**20:5.0f} MB ({parts[1] / 2**20:4.0f} private)"


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (glibc 2.33+): its heaps' bytes in use and free, every arena summed."""

    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def allocators() -> str:
    """What the allocators hold: Python's live objects (blocks) and glibc's heap bytes in use and free but kept.

    Resident memory that grows while these stay level is memory the
    allocators keep after it was freed, not memory the driver holds.
    """
    held = f"Python blocks {sys.getallocatedblocks():,}"
    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):  # not glibc, or older than 2.33
        return held
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return f"{held}, glibc heap in use {info.uordblks / 2**20:.1f} MB, free but kept {info.fordblks / 2**20:.1f} MB"


STAGES = [
    (prediction, "still_valid"), (prediction, "plan_shards"), (featurestore.FeatureCache, "scan"), (orchestration, "run_sharded"),
    (featurestore, "update_fingerprints"), (orchestration, "extract_files"), (orchestration, "_gather"), (inputs, "list_inputs"),
    (storage, "write_frame"),
]


def watch(memory: DriverMemory, owner: object, name: str) -> None:
    """Print the resident memory around every call of ``owner.name``."""
    function = getattr(owner, name)

    @functools.wraps(function)
    def watched(*args, **kwargs):
        before = resident_parts()
        memory.reset()
        if name == "run_sharded":
            tracemalloc.start()
        try:
            return function(*args, **kwargs)
        finally:
            held = ""
            if name == "run_sharded":
                held = f"; Python objects at most {tracemalloc.get_traced_memory()[1] / 2**20:.0f} MB"
                tracemalloc.stop()
            if name == "extract_files":  # once a wave
                held = f"; {allocators()}"
            print(f"{name:<22} before {megabytes(before)}  peak {megabytes((memory.peak, memory.peak_private))}  after {megabytes(resident_parts())}{held}", flush=True)

    setattr(owner, name, watched)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a bundle made by crossemo train")
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--work", help="where the synthetic files go (default: a temporary folder, removed after)")
    args = parser.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="crossemo-driver-"))
    corpora = {"root": work / "corpora", "speakers": 10, "per_emotion": max(1, args.files // (2 * 10 * 4)), "seconds": 0.5, "seed": args.files}
    # Written by a process of its own: synthesising N signals here would leave
    # this process's heap as large as the load, and measure that, not the driver.
    writer = multiprocessing.get_context("spawn").Process(target=make_demo_corpora, kwargs=corpora)
    writer.start()
    writer.join()
    if writer.exitcode != 0:
        raise SystemExit(f"writing the synthetic corpora failed (exit {writer.exitcode})")
    memory = DriverMemory(interval=0.05).__enter__()
    for owner, name in STAGES:
        watch(memory, owner, name)
    orchestration.connect(num_cpus=args.cpus)
    try:
        loaded = bundle.load_bundle(args.model)
        decode = loaded.metadata["decode"]
        settings = audio.AnalysisSettings(**{name: decode[name] for name in ("analysis_rate", "channel", "min_duration")})
        started = resident_parts()
        overall = DriverMemory(interval=0.05).__enter__()
        listing = inputs.list_inputs([str(folder) for folder in sorted(corpora["root"].iterdir()) if folder.is_dir()], speaker_pattern=r"/(?P<speaker>[sp]\d+)/")
        print(f"{len(listing.files)} files listed: the list holds {listing.files.memory_usage(deep=True).sum() / 2**20:.1f} MB; resident {megabytes(started)} before", flush=True)
        summary = orchestration.label_files(
            listing, loaded, args.model, str(work / "labels"), store=featurestore.FeatureStore(str(work / "store")),
            extractor=FeatureExtractor(loaded.metadata["feature_set"]), settings=settings, progress=False,
        )
        overall.__exit__(None, None, None)
        print(
            f"{summary.labelled} labelled in {summary.wall_seconds:.1f} s ({summary.files / summary.wall_seconds:.0f} files/s); driver resident "
            f"{megabytes(started)} before listing, peak {megabytes((overall.peak, overall.peak_private))}, {megabytes(resident_parts())} after"
        )
    finally:
        memory.__exit__(None, None, None)
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
