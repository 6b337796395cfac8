"""Local folders and object storage behind one interface (fsspec).

Every path crossemo reads or writes is a URI: a local path or ``s3://bucket/key``.
Credentials come the usual ways (AWS environment variables, profiles, instance
roles) or from explicit ``storage_options``; they are never written anywhere.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import posixpath
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

StorageOptions = dict[str, Any]

S3_DEFAULTS: StorageOptions = {
    # botocore retries throttling, 5xx answers and dropped connections with
    # exponential backoff ("standard" mode); s3fs adds its own retries on
    # timeouts. After the last attempt the error is reported, never swallowed.
    "config_kwargs": {"retries": {"max_attempts": 8, "mode": "standard"}, "connect_timeout": 10, "read_timeout": 60},
    # No listing cache: Ray workers write and remove files while the driver
    # lists and reads them, and a cached listing answered "not found" for
    # a file written after it (a predict run died with a bare path).
    "use_listings_cache": False,
}
"""Options crossemo gives s3fs unless the caller sets them."""


class StorageError(RuntimeError):
    """A storage location cannot be reached, read or written."""


WRITE_CHECK_PREFIX = ".crossemo-write-check-"
"""Name prefix of the probe :func:`check_writable` writes and deletes at once."""

PROBE_ATTEMPTS = 3
"""Attempts of :func:`check_writable`'s probe on an object store, unless the caller sets ``config_kwargs``."""


def filesystem(uri: str, *, storage_options: StorageOptions | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return the filesystem serving ``uri`` and the path inside it.

    Args:
        uri: local path or URL such as ``s3://bucket/prefix``.
        storage_options: keyword arguments for the filesystem (for S3: ``key``,
            ``secret``, ``endpoint_url``, ``client_kwargs`` …).

    Returns:
        ``(fs, path)``.
    """
    options = dict(storage_options or {})
    if uri.startswith(("s3://", "s3a://")):
        # A copy: botocore rewrites the retries it is given in place.
        options = {**copy.deepcopy(S3_DEFAULTS), **options}
    fs, path = fsspec.core.url_to_fs(uri, **options)
    return fs, path


def is_local(uri: str) -> bool:
    """Whether ``uri`` names the local filesystem."""
    return "://" not in uri or uri.startswith("file://")


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI with forward slashes."""
    if is_local(uri):
        return os.path.join(uri, *parts)
    return posixpath.join(uri, *parts)


def is_within(uri: str, folder: str, *, storage_options: StorageOptions | None = None) -> bool:
    """Whether ``uri`` is ``folder`` or lies below it, on the same filesystem (local paths made absolute, with symbolic links followed)."""
    (fs, path), (folder_fs, folder_path) = filesystem(uri, storage_options=storage_options), filesystem(folder, storage_options=storage_options)
    if is_local(uri) and is_local(folder):
        path, folder_path = os.path.realpath(path), os.path.realpath(folder_path)
    path, folder_path = path.rstrip("/"), folder_path.rstrip("/")
    return type(fs) is type(folder_fs) and (path == folder_path or path.startswith(folder_path + "/"))


def unstrip(fs: fsspec.AbstractFileSystem, path: str, like: str) -> str:
    """Turn a protocol-less path from ``fs`` back into a URI in the style of ``like``."""
    if is_local(like):
        return path
    return fs.unstrip_protocol(path)


def describe_error(error: BaseException) -> str:
    """A one-line description of a storage error that names its kind."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    name = type(error).__name__
    lowered = f"{name} {text}".lower()
    if any(word in lowered for word in ("credential", "accessdenied", "access denied", "forbidden", "signature", "invalidaccesskey")):
        return f"access denied ({name}: {text}); check the credentials for this location"
    return f"{name}: {text}" if text else name


PARQUET_READ_ERRORS = (pa.ArrowException, OSError, ValueError, KeyError)
"""What reading a Parquet file can raise: Arrow's errors (a damaged footer is a plain ``OSError``), storage errors, bad text."""


def unreadable(subject: str, error: BaseException, *, remedy: str) -> StorageError:
    """A one-line error for a file that cannot be read, giving ``remedy`` only when the file itself is at fault.

    Reaching a file fails with a subclass of ``OSError`` (permissions, a
    missing file, a connection): no remedy, since the file may be sound.
    Arrow reports bytes it cannot decode as ``ArrowInvalid``, a plain
    ``OSError`` ("Couldn't deserialize thrift") or a ``UnicodeDecodeError``,
    a table without an expected column as ``KeyError``; a folder where the
    file should be is ``IsADirectoryError``. s3fs reports throttling and
    server errors as a plain ``OSError`` too, but with an errno; Arrow's has none.
    """
    damaged = (type(error) is OSError and error.errno is None) or isinstance(error, (pa.ArrowInvalid, ValueError, KeyError, IsADirectoryError))
    return StorageError(f"{subject} cannot be read ({describe_error(error)}){f'; {remedy}' if damaged else ''}")


def read_bytes(uri: str, *, storage_options: StorageOptions | None = None) -> bytes:
    """Read a whole file.

    Args:
        uri: local path or URL such as ``s3://bucket/key``.
        storage_options: keyword arguments for the filesystem.

    Returns:
        the file's bytes, unchanged.

    Raises:
        OSError: if the file cannot be read (missing, access denied …).
    """
    fs, path = filesystem(uri, storage_options=storage_options)
    with fs.open(path, "rb") as handle:
        return handle.read()


def write_bytes(data: bytes, uri: str, *, storage_options: StorageOptions | None = None) -> None:
    """Write a file so that no reader ever sees it half-written.

    On a local disk the file is written under a temporary name and renamed;
    an object store publishes an object only once its upload completes.
    """
    fs, path = filesystem(uri, storage_options=storage_options)
    if is_local(uri):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = _temporary_name(path)
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)


def _temporary_name(path: str) -> str:
    """Where a local file is written before its rename: beside it, hidden.

    A leading dot, as Arrow's and pandas' folder readers skip (with ``_``):
    a temporary a killed writer left must not break reading the folder.
    """
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")


def write_table(table: pa.Table, uri: str, *, storage_options: StorageOptions | None = None) -> None:
    """Write a Parquet file atomically (see :func:`write_bytes`)."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    write_bytes(buffer.getvalue(), uri, storage_options=storage_options)


def write_batches(batches: Iterable[pa.RecordBatch], schema: pa.Schema, uri: str, *, storage_options: StorageOptions | None = None) -> None:
    """Write record batches as one Parquet file, atomically (see :func:`write_bytes`), without holding them all.

    A local file is written batch by batch under a temporary name and
    renamed; an object is uploaded once its bytes are complete (they hold the
    batches compressed). Each batch becomes a row group, so a reader can take
    the file a batch at a time again.

    Raises:
        OSError: the file cannot be written; a local temporary file is removed.
    """
    path = filesystem(uri, storage_options=storage_options)[1]
    if is_local(uri):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        target: Any = _temporary_name(path)
    else:
        target = io.BytesIO()
    try:
        with pq.ParquetWriter(target, schema) as writer:
            for batch in batches:
                writer.write_batch(batch.cast(schema))
    except BaseException:
        if isinstance(target, str) and os.path.exists(target):
            os.remove(target)
        raise
    if isinstance(target, str):
        os.replace(target, path)
    else:
        write_bytes(target.getvalue(), uri, storage_options=storage_options)


def frame_table(frame: pd.DataFrame, *, metadata: dict[str, str] | None = None) -> pa.Table:
    """The Arrow table :func:`write_frame` writes for ``frame``, with optional file metadata."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if metadata:
        merged = dict(table.schema.metadata or {})
        merged.update({key.encode(): value.encode() for key, value in metadata.items()})
        table = table.replace_schema_metadata(merged)
    return table


def write_frame(frame: pd.DataFrame, uri: str, *, storage_options: StorageOptions | None = None, metadata: dict[str, str] | None = None) -> None:
    """Write a DataFrame as Parquet atomically, with optional file metadata."""
    write_table(frame_table(frame, metadata=metadata), uri, storage_options=storage_options)


def read_frame(uri: str, *, storage_options: StorageOptions | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    """Read one Parquet file into a DataFrame."""
    fs, path = filesystem(uri, storage_options=storage_options)
    with fs.open(path, "rb") as handle:
        return pq.read_table(handle, columns=columns).to_pandas()


@contextlib.contextmanager
def open_parquet(uri: str, *, storage_options: StorageOptions | None = None) -> Iterator[pq.ParquetFile]:
    """One Parquet file, open for reading a part (columns, batches) at a time.

    A local file is read by Arrow itself, not through a Python file object,
    whose reads come back as Python bytes: reading a large file a batch at a
    time that way leaves the process's heap larger by a few times a batch.
    """
    fs, path = filesystem(uri, storage_options=storage_options)
    if is_local(uri):
        with pq.ParquetFile(path) as parquet:
            yield parquet
    else:
        with fs.open(path, "rb") as handle, pq.ParquetFile(handle) as parquet:
            yield parquet


def read_table(uri: str, *, storage_options: StorageOptions | None = None) -> pa.Table:
    """Read one Parquet file as an Arrow table."""
    fs, path = filesystem(uri, storage_options=storage_options)
    with fs.open(path, "rb") as handle:
        return pq.read_table(handle)


def read_schema(uri: str, *, storage_options: StorageOptions | None = None) -> pa.Schema:
    """A Parquet file's Arrow schema, with its key-value metadata, from the file's footer."""
    fs, path = filesystem(uri, storage_options=storage_options)
    with fs.open(path, "rb") as handle:
        return pq.read_schema(handle)


def read_metadata(uri: str, *, storage_options: StorageOptions | None = None) -> dict[str, str]:
    """The key-value metadata of a Parquet file's schema."""
    return schema_metadata(read_schema(uri, storage_options=storage_options))


def schema_metadata(schema: pa.Schema) -> dict[str, str]:
    """An Arrow schema's key-value metadata as text (empty when it has none)."""
    return {key.decode(): value.decode() for key, value in (schema.metadata or {}).items()}


def list_files(uri: str, *, suffix: str = "", maxdepth: int | None = None, storage_options: StorageOptions | None = None) -> list[str]:
    """URIs of the files below ``uri`` (at most ``maxdepth`` folders down; 1: its own files) whose names end in ``suffix``, sorted; none if it is absent."""
    fs, path = filesystem(uri, storage_options=storage_options)
    if not fs.exists(path):
        return []
    found = [item for item in fs.find(path, maxdepth=maxdepth) if item.endswith(suffix)]
    if is_local(uri):
        # fsspec makes local paths absolute; a relative --out must list the
        # names join() builds from it, or a re-run finds none of its finished work.
        base = path.rstrip("/")
        return sorted(uri if item == base else join(uri, posixpath.relpath(item, base)) for item in found)
    return sorted(unstrip(fs, item, uri) for item in found)


def remove(uri: str, *, storage_options: StorageOptions | None = None) -> None:
    """Delete one file."""
    fs, path = filesystem(uri, storage_options=storage_options)
    fs.rm_file(path)


def modified(uri: str, *, storage_options: StorageOptions | None = None) -> float:
    """When the file at ``uri`` was last written, in seconds since the epoch (an object's upload time on S3)."""
    fs, path = filesystem(uri, storage_options=storage_options)
    return fs.modified(path).timestamp()


def exists(uri: str, *, storage_options: StorageOptions | None = None) -> bool:
    """Whether a file or folder exists at ``uri``."""
    fs, path = filesystem(uri, storage_options=storage_options)
    return fs.exists(path)


def entries_in(uri: str, *, storage_options: StorageOptions | None = None) -> list[str]:
    """The names of the files and folders directly in the folder or prefix ``uri`` (none if it is absent or a file).

    Hidden names (``.DS_Store``, a write check's probe a bucket refused to
    delete) and an object store's folder marker (the key ``prefix/``) are not counted.
    """
    fs, path = filesystem(uri, storage_options=storage_options)
    try:
        found = fs.ls(path, detail=False)
    except (FileNotFoundError, NotADirectoryError):
        return []
    own = path.rstrip("/")
    names = [entry.rstrip("/").rsplit("/", 1)[-1] for entry in found if entry.rstrip("/") != own]
    return sorted(name for name in names if not name.startswith("."))


def check_writable(uri: str, *, storage_options: StorageOptions | None = None) -> None:
    """Refuse an output location crossemo could not write to, before any work and leaving nothing behind.

    A local ``uri`` must be a folder or a path whose nearest existing ancestor is
    a folder; a probe file created and removed there proves that entries can be
    made. An object-store ``uri`` must lie in an existing bucket that accepts
    writes; a tiny probe object under the prefix is written and deleted.

    Args:
        uri: the output folder or prefix, local or ``s3://bucket/prefix``.
        storage_options: filesystem options for ``uri``.

    Raises:
        StorageError: ``uri`` is an existing file, lies below a file, or cannot
            be written; the one-line message says which.
    """
    if is_local(uri):
        _check_local_folder(uri, os.path.abspath(filesystem(uri)[1]))
        return
    options = dict(storage_options or {})
    if "config_kwargs" not in options:
        # The probe is the first contact: a wrong endpoint or a closed port is
        # named in seconds, not after the eight attempts' backoff (over a minute)
        # that the run's own requests keep for throttling and dropped connections.
        options["config_kwargs"] = {**copy.deepcopy(S3_DEFAULTS["config_kwargs"]), "retries": {"max_attempts": PROBE_ATTEMPTS, "mode": "standard"}}
    try:
        fs, path = filesystem(uri, storage_options=options)
        probe = posixpath.join(path, f"{WRITE_CHECK_PREFIX}{uuid.uuid4().hex}")
        fs.pipe_file(probe, b"")
    except Exception as error:  # s3fs and botocore raise many kinds (no bucket, denied, unreachable); each means "cannot write here"
        raise StorageError(f"output location {uri} cannot be written: {describe_error(error)}") from None
    try:
        fs.rm_file(probe)
    except Exception:
        # crossemo itself never deletes on object stores, so a location that
        # takes writes but refuses deletes still works; an empty probe left
        # behind is the smaller harm than refusing it.
        pass


def _check_local_folder(uri: str, path: str) -> None:
    """The local half of :func:`check_writable`; ``path`` is ``uri`` as an absolute path."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise StorageError(f"output location {uri} is an existing file, not a folder")
    existing = path
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise StorageError(f"output location {uri} cannot be created: {existing} is a file, not a folder")
    # A real file rather than os.access: root passes os.access everywhere,
    # even where the filesystem refuses writes (read-only mounts, /proc, /sys).
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=WRITE_CHECK_PREFIX)
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        raise StorageError(f"output location {uri} cannot be written: cannot create files in {existing} ({error.strerror or error})") from None
