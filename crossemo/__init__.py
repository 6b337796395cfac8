"""crossemo: transfer speech-emotion knowledge from public corpora to a few speakers of your own."""

import os

__version__ = "0.1.0"

# Arrow's C++ default allocator, mimalloc, keeps what the driver of
# `crossemo predict` frees after reading each wave's index and cache keys,
# so the driver's resident memory climbed with the number of files while
# what it held did not (benchmarks/driver_memory.py and driver_heap.py: see
# the README). The system allocator gives it back. Arrow reads this when it
# first allocates, so it is set before anything imports pyarrow; a value
# the user set wins. Ray processes this driver starts inherit it.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
