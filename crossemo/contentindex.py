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

import re
from collections.abc import Iterable, Sequence

import numpy as np

REJECTION_SUFFIX = ".rejected.parquet"
"""Cache files of this suffix hold the reason a content gave no features, not its features."""


KEY = re.compile(r"[0-9a-f]{64}")
"""A content key as :func:`crossemo.featurestore.content_key` writes it: SHA-256 in 64 lower-case hex digits."""


def digests(keys: Iterable[object]) -> tuple[np.ndarray, np.ndarray]:
    """Content keys as 32-byte digests (numpy ``S32``), and whether each is a key at all.

    Anything but 64 lower-case hex digits (``""`` for a file not read, a
    null) is no key: it is never found, whatever the index holds.
    """
    keys = list(keys)
    valid = np.array([isinstance(key, str) and KEY.fullmatch(key) is not None for key in keys], dtype=bool)
    return np.array([bytes.fromhex(key) if ok else b"" for key, ok in zip(keys, valid)], dtype="S32"), valid


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
        """Take in that the cache file at ``uri`` holds ``keys`` (hex SHA-256; anything else is left out)."""
        self._files.append(uri)
        held, valid = digests(keys)
        self._pending.append((held[valid], len(self._files) - 1))

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

    def _positions(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where each key's entries start and end in the sorted digests, and whether it has any."""
        sorted_digests, _ = self._sorted()
        wanted, valid = digests(keys)
        start = np.searchsorted(sorted_digests, wanted, side="left")
        end = np.searchsorted(sorted_digests, wanted, side="right")
        return start, end, valid & (end > start)

    def contains(self, keys: Sequence[str]) -> np.ndarray:
        """Whether each key is cached, as a boolean array of ``len(keys)``."""
        return self._positions(list(keys))[2]

    def __contains__(self, key: object) -> bool:
        return bool(self.contains([key])[0])

    def locate(self, keys: Sequence[str]) -> list[str]:
        """The cache file holding each key (its features, else its rejection), ``""`` where none does."""
        start, _, found = self._positions(list(keys))
        _, file_of = self._sorted()
        return [self._files[file_of[p]] if hit else "" for p, hit in zip(start, found)]

    def files_holding(self, keys: Iterable[str]) -> set[str]:
        """Every cache file holding any of ``keys``: features and rejections alike."""
        start, end, found = self._positions(list(keys))
        _, file_of = self._sorted()
        return {self._files[f] for s, e, hit in zip(start, end, found) if hit for f in file_of[s:e]}

    def __len__(self) -> int:
        """Content keys held, a content in two files counted twice."""
        return len(self._digests) + sum(len(d) for d, _ in self._pending)

    def __getstate__(self) -> dict:
        # Sorted once here, not in every task that receives a copy.
        self._sorted()
        return self.__dict__.copy()
