"""Benchmark: is the growth of ``crossemo predict``'s driver memory live allocations, or memory its allocators keep?

Runs ``benchmarks/driver_memory.py`` under memray (``pip install -e .[bench]``),
which records every allocation of the driver process, Python's and native
libraries' alike, and prints, over the labelling, the live allocations
(memray's heap, less the mapping of Ray's object store, which Ray sizes)
beside the resident memory, in ten steps, then both at their peaks:

    python benchmarks/driver_heap.py --model MODEL [--files 20000] [--work DIR]

Run it at two sizes: live allocations that stay level while resident memory
climbs are memory the allocators keep after it was freed, not data the
driver holds.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from memray import FileReader

MAPPING_BYTES = 2**30
"""Allocations of at least this size are the object store's mapping (Ray maps it whole into the driver at connect)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a bundle made by crossemo train")
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--work", help="where the capture (kept, for memray's own reports) and the synthetic files (removed) go (default: a temporary folder)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="crossemo-heap-"))
    work.mkdir(parents=True, exist_ok=True)
    capture = work / f"driver-{args.files}.bin"
    capture.unlink(missing_ok=True)
    try:
        subprocess.run(
            [sys.executable, "-m", "memray", "run", "-q", "-o", str(capture), str(Path(__file__).with_name("driver_memory.py")),
             "--model", args.model, "--files", str(args.files), "--work", str(work / "load")],
            check=True, stdout=subprocess.DEVNULL,
        )
    finally:
        shutil.rmtree(work / "load", ignore_errors=True)
    reader = FileReader(str(capture))
    mapping = sum(record.size for record in reader.get_leaked_allocation_records(merge_threads=True) if record.size >= MAPPING_BYTES)
    # From when the object store is mapped (Ray has connected) to the end.
    snapshots = [s for s in reader.get_memory_snapshots() if s.heap >= mapping]
    start = snapshots[0].time
    step = max(1, len(snapshots) // 10)
    for snapshot in snapshots[::step]:
        print(f"{(snapshot.time - start) / 1000:6.0f} s  live {(snapshot.heap - mapping) / 2**20:6.1f} MB  resident {snapshot.rss / 2**20:6.1f} MB")
    peak_live = max(s.heap for s in snapshots) - mapping
    print(f"{args.files} files: live allocations peak {peak_live / 2**20:.1f} MB (first {(snapshots[0].heap - mapping) / 2**20:.1f}, "
          f"last {(snapshots[-1].heap - mapping) / 2**20:.1f}); resident peak {max(s.rss for s in snapshots) / 2**20:.1f} MB")


if __name__ == "__main__":
    main()
