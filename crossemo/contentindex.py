"""Which cache file holds each content key, in a few dozen bytes per content.

A run asks two questions of the feature cache for every file it is given:
is this content cached already, and which cache file holds it. Held as
Python sets and dicts of 64-character hex strings, the answers cost about
230 bytes per cached content, and the driver of ``crossemo predict`` asks
them once per wave over the whole cache, so its memory grew with the number
of files ever labelled. :class:`ContentIndex` keeps the 32-byte digests in
one sorted numpy array with the number of the file holding each (37 bytes
per content) and answers both questions by binary search.

Everything here runs without Ray; extraction tasks receive an index to skip
contents another run already extracted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

REJECTION_SUFFIX = ".rejected.parquet"
"""Cache files of this suffix hold the reason a content gave no features, not its features."""


def digests(keys: Iterable[str]) -> np.ndarray:
    """Hex SHA-256 keys as 32-byte digests (numpy ``S32``); an empty key becomes 32 zero bytes, which no cached content has.

    Raises:
        ValueError: a key that is neither empty nor 64 hex digits.
    """
    return np.array([bytes.fromhex(key) if key else bytes(32) for key in keys], dtype="S32")


class ContentIndex:
    """The content keys of a feature cache and the file holding each.

    Files are added one at a time (:meth:`add`); lookups sort what was added
    since the last lookup once. A content held by a features file and by a
    rejection file is located at the features file.
    """

    def __init__(self) -> None:
        self._files: list[str] = []
        self._pending: list[tuple[np.ndarray, int]] = []
        self._digests = np.empty(0, dtype="S32")
        self._file_of = np.empty(0, dtype=np.int32)

    def add(self, uri: str, keys: Iterable[str]) -> None:
        """Take in that the cache file at ``uri`` holds ``keys`` (hex SHA-256)."""
        self._files.append(uri)
        self._pending.append((digests(keys), len(self._files) - 1))

    def _sorted(self) -> tuple[np.ndarray, np.ndarray]:
        if self._pending:
            added = np.concatenate([d for d, _ in self._pending])
            files = np.concatenate([np.full(len(d), f, dtype=np.int32) for d, f in self._pending])
            self._pending = []
            all_digests, all_files = np.concatenate([self._digests, added]), np.concatenate([self._file_of, files])
            rejection = np.array([uri.endswith(REJECTION_SUFFIX) for uri in self._files], dtype=bool)[all_files]
            # By digest, then features before rejections: a lookup finds the first.
            order = np.lexsort((rejection, all_digests))
            self._digests, self._file_of = all_digests[order], all_files[order]
        return self._digests, self._file_of

    def _positions(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Where each key is in the sorted digests, and whether it is there."""
        sorted_digests, _ = self._sorted()
        wanted = digests(keys)
        position = np.searchsorted(sorted_digests, wanted)
        found = position < len(sorted_digests)
        found[found] = sorted_digests[position[found]] == wanted[found]
        return position, found

    def contains(self, keys: Sequence[str]) -> np.ndarray:
        """Whether each key is cached, as a boolean array of ``len(keys)``."""
        return self._positions(list(keys))[1]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and len(key) == 64 and bool(self.contains([key])[0])

    def locate(self, keys: Sequence[str]) -> list[str]:
        """The cache file holding each key (its features, else its rejection), ``""`` where none does."""
        position, found = self._positions(list(keys))
        _, file_of = self._sorted()
        return [self._files[file_of[p]] if hit else "" for p, hit in zip(position, found)]

    def __len__(self) -> int:
        """Content keys held, a content in two files counted twice."""
        return len(self._digests) + sum(len(d) for d, _ in self._pending)

    def __getstate__(self) -> dict:
        # Sorted once here, not in every task that receives a copy.
        self._sorted()
        return self.__dict__.copy()
