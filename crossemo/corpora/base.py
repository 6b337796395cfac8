"""What every corpus recipe shares: listing audio under a root and accounting for it.

A recipe only knows how its corpus names files. :func:`scan` lists the audio
files below the root (a local folder or an object-store prefix), asks the
recipe's parser about each one, and returns a :class:`Manifest` in which every
audio file is either an utterance or a skipped file with its reason.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import fsspec
import pandas as pd

from crossemo import storage
from crossemo.labels import EMOTIONS, MANIFEST_COLUMNS

AUDIO_LIKE_SUFFIXES: tuple[str, ...] = (
    ".wav", ".wave", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".mp4", ".aac", ".wma", ".au", ".snd",
    ".aif", ".aiff", ".aifc", ".caf", ".w64", ".rf64", ".webm", ".amr", ".3gp",
)
"""Suffixes that make a file below a corpus root a candidate utterance.

One rule decides what is used: the *name* only nominates a file (so that
no recording next to the others goes unreported), its *content* decides:
whatever :mod:`crossemo.audio` decodes is used, whatever it cannot (an AAC
``.m4a``, a text file named ``.wav``) is a ``_rejected`` row with the reason.
"""


class CorpusError(ValueError):
    """A corpus cannot be read as its recipe expects (missing root, bad manifest …)."""


@dataclass(frozen=True)
class Utterance:
    """What a recipe's parser learned from one file name."""

    speaker: str
    emotion: str
    label: str

    def __post_init__(self) -> None:
        if self.emotion not in EMOTIONS:
            raise ValueError(f"emotion {self.emotion!r} is not one of {EMOTIONS}")


@dataclass(frozen=True)
class Skip:
    """A file the recipe does not use, and why."""

    reason: str


def by_emotion_code(corpus: str, code: str, *, speaker: str, emotions: dict[str, str], others: dict[str, str]) -> Utterance | Skip:
    """The verdict on a file from its corpus's emotion code.

    Args:
        corpus: the corpus's display name, for the reason of an unknown code.
        code: the emotion code as the corpus writes it.
        speaker: the speaker id the file name gave.
        emotions: codes of the four classes → class names.
        others: codes the corpus has for other emotions → their names.
    """
    if code in others:
        return Skip(f"emotion {code} ({others[code]}) is not one of the four classes")
    if code not in emotions:
        return Skip(f"unknown {corpus} emotion code {code!r}")
    return Utterance(speaker=speaker, emotion=emotions[code], label=code)


Parser = Callable[[str], "Utterance | Skip"]
"""Turns a path relative to the corpus root (forward slashes) into a verdict."""


@dataclass
class Manifest:
    """The utterances of one corpus and the files that were skipped.

    Attributes:
        corpus: the corpus name used in every output.
        root: the URI the corpus was read from.
        utterances: one row per utterance, columns :data:`MANIFEST_COLUMNS`
            plus ``fingerprint`` (size and modification stamp, used to find
            cached features without reading the audio again).
        skipped: one row per audio file not used: ``uri``, ``corpus``, ``reason``.
        warnings: things the user should know that did not stop the corpus
            from being read (blank manifest rows skipped, speaker ids that
            differ only in spelling …); printed in the summary and recorded
            with the run.
    """

    corpus: str
    root: str
    utterances: pd.DataFrame
    skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["uri", "corpus", "reason"]))
    warnings: list[str] = field(default_factory=list)

    def counts(self) -> pd.DataFrame:
        """Utterances per emotion (columns) and speaker (rows)."""
        table = pd.crosstab(self.utterances["speaker"], self.utterances["emotion"])
        return table.reindex(columns=[e for e in EMOTIONS if e in table.columns])


def fingerprint(info: dict) -> str:
    """A cheap identity of a file's content from its listing: size plus ETag or mtime."""
    stamp = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified") or info.get("created") or ""
    return f"{info.get('size', '')}:{str(stamp).strip(chr(34))}"


def open_root(root: str, *, storage_options: storage.StorageOptions | None = None, what: str = "corpus root") -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem of a corpus root and its path without a trailing slash.

    Args:
        root: a local folder or ``s3://`` prefix.
        storage_options: filesystem options for ``root``.
        what: how messages name the root (``"corpus root"``, ``"--audio"``).

    Raises:
        CorpusError: the root (or its bucket) does not exist, is not a folder, or cannot be reached.
    """
    try:
        fs, path = storage.filesystem(root, storage_options=storage_options)
        if not fs.exists(path):
            bucket = path.strip("/").split("/")[0]
            if not storage.is_local(root) and bucket != path.strip("/") and not fs.exists(bucket):
                raise CorpusError(f"{what} {root} does not exist: there is no bucket {bucket} (or these credentials cannot see it)")
            raise CorpusError(f"{what} {root} does not exist")
        if not fs.isdir(path):
            raise CorpusError(f"{what} {root} is not a folder")
    except CorpusError:
        raise
    except Exception as error:  # storage back-ends raise many kinds; name it and stop
        raise CorpusError(f"cannot list {what} {root}: {storage.describe_error(error)}") from error
    # One spelling per local folder (``a//b``, ``a/../a/b``): a file's URI is its identity in every output and shard key.
    return fs, (posixpath.normpath(path) if storage.is_local(root) else path.rstrip("/"))


def list_audio(root: str, *, storage_options: storage.StorageOptions | None = None) -> tuple[list[tuple[str, str, str]], list[dict]]:
    """List the audio-like files below ``root``, following symbolic links.

    A file is a candidate when its suffix is one of :data:`AUDIO_LIKE_SUFFIXES`
    (any case); whether it can be used is decided later by its content (see
    :mod:`crossemo.audio`). On a local disk, links to folders and files are
    followed (a folder reached twice, as through a link to an ancestor, is
    walked once) and a link whose target is missing is reported.

    Returns:
        ``(files, broken)``: ``(uri, path relative to root, fingerprint)`` per
        file, sorted by path; and one ``{"uri", "reason"}`` per dangling link.

    Raises:
        CorpusError: the root does not exist, is not a folder, or it or a folder below it cannot be read.
    """
    files: list[tuple[str, str, str]] = []
    broken: list[dict] = []
    for batch, dangling in walk_audio(root, storage_options=storage_options):
        files += batch
        broken += dangling
    return sorted(files, key=lambda file: file[1]), broken


def walk_audio(root: str, *, storage_options: storage.StorageOptions | None = None, what: str = "corpus root") -> Iterator[tuple[list[tuple[str, str, str]], list[dict]]]:
    """:func:`list_audio`'s files and dangling links a folder at a time (object storage: one batch), in no set order.

    A caller that keeps the files in a compact form of its own (as
    ``crossemo predict``'s driver does) holds one folder's Python objects at
    a time, not the whole tree's.

    Raises:
        CorpusError: the root does not exist, is not a folder, or it or a folder below it cannot be read
            (messages name the root as ``what``; see :func:`open_root`).
    """
    fs, base = open_root(root, storage_options=storage_options, what=what)

    def entry(path: str, stamp: str) -> tuple[str, str, str]:
        relative = posixpath.relpath(path, base) if path.startswith(base) else path
        return storage.unstrip(fs, path, root), relative.replace("\\", "/"), stamp

    try:
        if storage.is_local(root):
            for found, broken in _walk_local(base):
                audio = [(path, stamp) for path, stamp in found if is_audio_like(path)]
                misnamed = [{"uri": path, "reason": NAME_NOT_UTF8} for path, _ in audio if not is_utf8(path)]
                rejected = [{**row, "uri": shown(row["uri"])} for row in broken + misnamed]
                yield [entry(path, stamp) for path, stamp in audio if is_utf8(path)], rejected
        else:
            found = fs.find(base, detail=True)
            yield [entry(path, fingerprint(info)) for path, info in found.items() if is_audio_like(path)], []
    except Exception as error:  # storage back-ends raise many kinds; name it and stop
        raise CorpusError(f"cannot list {what} {root}: {storage.describe_error(error)}") from error


NAME_NOT_UTF8 = "its name is not UTF-8 text (shown with \\x escapes); rename the file"
"""Why a local file whose name's bytes are not UTF-8 is rejected: no output (Parquet text) can hold its name."""


def is_utf8(path: str) -> bool:
    """Whether a local path's bytes are UTF-8 (Python hands other bytes over as lone surrogates)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(path: str) -> str:
    """A local path as text any output can hold: bytes that are not UTF-8 as ``\\xNN``."""
    return path if is_utf8(path) else os.fsencode(path).decode("utf-8", "backslashreplace")


def is_audio_like(path: str) -> bool:
    """Whether a file's name marks it as audio (see :data:`AUDIO_LIKE_SUFFIXES`)."""
    return path.lower().endswith(AUDIO_LIKE_SUFFIXES)


def dangling_link_reason(path: str) -> str:
    """The rejection reason of a local symbolic link whose target is missing."""
    return f"dangling symbolic link (its target {os.readlink(path)} does not exist)"


def _walk_local(base: str) -> Iterator[tuple[list[tuple[str, str]], list[dict]]]:
    """Every file below a local folder, through links, each folder once, a folder at a time.

    Yields:
        ``([(path, fingerprint)], dangling links as {"uri", "reason"})`` per folder.
    """
    seen: set[tuple[int, int]] = set()

    def unreadable(error: OSError) -> None:
        # os.walk skips a folder it cannot list; its files would vanish from the corpus unnoticed.
        raise error

    for folder, folders, names in os.walk(base, followlinks=True, onerror=unreadable):
        status = os.stat(folder)
        if (status.st_dev, status.st_ino) in seen:
            # Reached again through a link (a loop, or two links to one folder).
            folders.clear()
            continue
        seen.add((status.st_dev, status.st_ino))
        folders.sort()
        found, broken = [], []
        for name in names:
            path = os.path.join(folder, name)
            try:
                target = os.stat(path)
            except FileNotFoundError:
                broken.append({"uri": path, "reason": dangling_link_reason(path)})
                continue
            if stat.S_ISREG(target.st_mode):
                found.append((path, fingerprint({"size": target.st_size, "mtime": target.st_mtime})))
        yield found, broken


def scan(corpus: str, root: str, parse: Parser, *, storage_options: storage.StorageOptions | None = None) -> Manifest:
    """Build a manifest by parsing every audio file name below ``root``.

    Args:
        corpus: name written into every row.
        root: local folder or object-store prefix.
        parse: the recipe's file-name parser.
        storage_options: filesystem options for ``root``.

    Returns:
        the manifest; files the parser skips are listed with their reason.

    Raises:
        CorpusError: the root cannot be listed, or holds no usable utterance.
    """
    files, broken = list_audio(root, storage_options=storage_options)
    rows, skipped = [], [{"corpus": corpus, **link} for link in broken]
    for uri, relative, stamp in files:
        verdict = parse(relative)
        if isinstance(verdict, Skip):
            skipped.append({"uri": uri, "corpus": corpus, "reason": verdict.reason})
        else:
            rows.append({"corpus": corpus, "speaker": verdict.speaker, "emotion": verdict.emotion, "uri": uri, "label": verdict.label, "fingerprint": stamp})
    return build_manifest(corpus, root, rows, skipped)


def build_manifest(corpus: str, root: str, rows: list[dict], skipped: list[dict], *, warnings: list[str] | None = None) -> Manifest:
    """Assemble and validate a manifest from rows and skipped files.

    Raises:
        CorpusError: no utterance of the four classes was found.
    """
    utterances = pd.DataFrame(rows, columns=[*MANIFEST_COLUMNS, "fingerprint"])
    skipped_frame = pd.DataFrame(skipped, columns=["uri", "corpus", "reason"])
    if utterances.empty:
        detail = f" ({len(skipped_frame)} audio files skipped, e.g. {skipped_frame['reason'].iloc[0]})" if len(skipped_frame) else " (no audio files found)"
        raise CorpusError(f"corpus {corpus!r} at {root} has no utterance of {', '.join(EMOTIONS)}{detail}")
    utterances = utterances.sort_values("uri", kind="stable").reset_index(drop=True)
    return Manifest(corpus=corpus, root=root, utterances=utterances, skipped=skipped_frame, warnings=list(warnings or []))
