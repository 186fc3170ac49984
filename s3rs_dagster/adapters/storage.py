"""Object storage for Parquet files, JSON state documents and leases: S3 or a local folder.

Keys are always relative to the storage root (`storage.url`) and use '/' between folders:
for `s3://bucket/backups`, key `p/t/x.parquet` is the object `backups/p/t/x.parquet`. Nothing
outside the root is ever listed or touched.

Conditional writes give compare-and-swap on both backends. `if_none_match=True` creates only
when the key is absent; `if_match=etag` replaces only the version that etag names. A writer that
loses gets `PreconditionFailed`. S3 does this with conditional PutObject (HTTP 412); a local
folder with an flock per key, taken by every put_bytes, so it also holds between processes.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

import boto3
import botocore.session
import pyarrow.fs as pafs
from boto3.exceptions import S3UploadFailedError
from botocore.client import BaseClient
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
)
from botocore.utils import parse_timestamp

from s3rs_dagster.config import StorageConfig

DEFAULT_REGION = "us-east-1"
MAX_ATTEMPTS = 5
CONNECT_TIMEOUT_SECONDS = 10
READ_TIMEOUT_SECONDS = 60
DELETE_BATCH_SIZE = 1000
"""The most keys one S3 DeleteObjects request accepts."""

LOCK_FOLDER = ".s3rs-locks"
"""Local backend: the folder under the root that holds one lock file per key."""
TEMP_PREFIX = ".tmp-"
"""Local backend: files being written are named `.tmp-<uuid>-<name>` next to their target."""

_PRECONDITION_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict"}
_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}
_ACCESS_CODES = {
    "AccessDenied",
    "403",
    "Forbidden",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AllAccessDisabled",
}
_READ_CHUNK = 1024 * 1024

_SINGLE_PUT_BYTES = 8 * 1024 * 1024
"""boto3's multipart threshold: files up to this size are sent with one PutObject."""


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object."""

    key: str
    """Relative to the storage root."""
    size: int
    last_modified: datetime
    """Timezone-aware UTC."""
    etag: str
    """Opaque version token for if_match: the S3 ETag without quotes; local: content md5 hex."""


class StorageError(Exception):
    """Storage cannot be used; the message names the URI and what to check, never a secret."""


class ObjectNotFound(StorageError):
    """The key does not exist."""


class PreconditionFailed(StorageError):
    """A conditional write lost: the key existed (if_none_match) or changed (if_match).

    On S3 a retried request can also get this after its own first attempt succeeded but the
    answer was lost; compare-and-swap callers re-read the document and see their own write.
    """


def validate_key(key: str) -> str:
    """Return `key` if it is a safe relative key, else raise StorageError naming it."""
    problem = _key_problem(key)
    if problem:
        raise StorageError(f"invalid storage key {key!r}: {problem}")
    return key


def _key_problem(key: str) -> str | None:
    if not key:
        return "it is empty"
    if "\x00" in key:
        return "it contains a NUL character"
    if "\\" in key:
        return "it contains a backslash; use '/' between folders"
    if key.startswith("/"):
        return "keys are relative to the storage root and cannot start with '/'"
    for segment in key.split("/"):
        if segment == "":
            return "it has an empty segment ('//' or a trailing '/')"
        if segment in (".", ".."):
            return f"it has a '{segment}' segment"
    return None


def _validate_prefix(prefix: str) -> str:
    """A list() prefix: '' (everything), a key, a key with one trailing '/', or part of a key."""
    if prefix:
        problem = _key_problem(prefix.removesuffix("/"))
        if problem:
            raise StorageError(f"invalid storage prefix {prefix!r}: {problem}")
    return prefix


def _check_conditions(if_match: str | None, if_none_match: bool) -> None:
    if if_match is not None and if_none_match:
        raise ValueError("put_bytes: if_match and if_none_match exclude each other")


class Storage(ABC):
    """Objects under one root: an S3 bucket (and prefix) or a local folder."""

    url: str
    """The root, normalised: s3://bucket/prefix, s3://bucket or file:///abs/path."""

    def uri(self, key: str) -> str:
        """The full address of `key`, for messages, manifests and COPY: not percent-encoded."""
        return f"{self.url.rstrip('/')}/{validate_key(key)}"

    @abstractmethod
    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        content_type: str | None = None,
    ) -> str:
        """Write `data` at `key` and return its new etag.

        if_none_match: only if the key does not exist; if_match: only if its current etag is
        this one (a missing key fails too). Otherwise PreconditionFailed.
        """

    @abstractmethod
    def get_bytes(self, key: str) -> tuple[bytes, str]:
        """(data, etag); ObjectNotFound when the key does not exist."""

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """The object's facts, or None when it does not exist."""

    @abstractmethod
    def put_file(self, local_path: Path, key: str) -> ObjectInfo:
        """Upload a local file to `key`, replacing what is there (callers use unique keys)."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix`, recursively, in key order.

        Objects whose names are not valid keys (such as the empty 'folder/' markers some
        consoles create) cannot be addressed by this adapter and are not listed.
        """

    @abstractmethod
    def delete(self, keys: Iterable[str]) -> int:
        """Delete `keys` and return how many distinct keys are now gone.

        Missing keys are fine and counted: S3 cannot tell a deleted key from a missing one,
        and both backends count the same way.
        """

    @abstractmethod
    def filesystem(self) -> tuple[pafs.FileSystem, str]:
        """A pyarrow filesystem and the root's path in it, for pyarrow.parquet and datasets."""


def open_storage(config: StorageConfig) -> Storage:
    """The backend that `storage.url` names."""
    if config.local_root is None:
        return S3Storage(config)
    return LocalStorage(config.local_root)


# --------------------------------------------------------------------------- S3


class S3Storage(Storage):
    """An S3 bucket (AWS or an S3-compatible store), optionally under a key prefix."""

    def __init__(self, config: StorageConfig, *, max_attempts: int = MAX_ATTEMPTS) -> None:
        """`max_attempts` counts the first try; tests lower it to fail fast."""
        parsed = urlparse(config.url)
        if parsed.scheme != "s3":
            raise ValueError(f"S3Storage needs an s3:// url, not {config.url!r}")
        self.bucket: str = parsed.netloc
        prefix = config.prefix
        self.url = f"s3://{self.bucket}/{prefix}" if prefix else f"s3://{self.bucket}"
        self._root = f"{prefix}/" if prefix else ""
        self._config = config
        self._max_attempts = max_attempts
        self._filesystem: pafs.S3FileSystem | None = None
        core = botocore.session.get_session()
        core.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=_timestamp
        )
        self._session = boto3.session.Session(
            aws_access_key_id=config.access_key_id,
            aws_secret_access_key=self._secret(),
            region_name=config.region,
            botocore_session=core,
        )
        self.region: str = config.region or self._session.region_name or DEFAULT_REGION
        self._client = self._session.client(
            "s3",
            endpoint_url=config.endpoint_url,
            region_name=self.region,
            config=BotoConfig(
                retries={"mode": "standard", "max_attempts": max_attempts},
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                read_timeout=READ_TIMEOUT_SECONDS,
                s3={"addressing_style": config.addressing_style},
            ),
        )

    def get_client(self) -> BaseClient:
        """The boto3 S3 client (as dagster-aws' S3Resource.get_client()); thread-safe."""
        return self._client

    def _secret(self) -> str | None:
        secret = self._config.secret_access_key
        return secret.get_secret_value() if secret is not None else None

    def _key(self, key: str) -> str:
        return self._root + validate_key(key)

    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        content_type: str | None = None,
    ) -> str:
        _check_conditions(if_match, if_none_match)
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key), "Body": data}
        if if_none_match:
            args["IfNoneMatch"] = "*"
        if if_match is not None:
            args["IfMatch"] = f'"{if_match}"'
        if content_type:
            args["ContentType"] = content_type
        uri = self.uri(key)
        try:
            with self._errors("write", uri):
                response = self._client.put_object(**args)
        except ObjectNotFound as exc:  # AWS answers If-Match on a missing key with 404
            raise PreconditionFailed(
                f"{uri} was not written: it does not exist any more (if_match)"
            ) from exc
        return _unquote(response["ETag"])

    def get_bytes(self, key: str) -> tuple[bytes, str]:
        with self._errors("read", self.uri(key)):
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            data = response["Body"].read()
        return data, _unquote(response["ETag"])

    def head(self, key: str) -> ObjectInfo | None:
        """As Storage.head; a missing bucket also reads as None (HEAD answers carry no code)."""
        with self._errors("read", self.uri(key)):
            try:
                response = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                if _status(exc) == 404:
                    return None
                raise
        return ObjectInfo(
            key=key,
            size=response["ContentLength"],
            last_modified=response["LastModified"].astimezone(UTC),
            etag=_unquote(response["ETag"]),
        )

    def put_file(self, local_path: Path, key: str) -> ObjectInfo:
        """Upload a file. Up to 8 MiB with one PutObject, whose answer is the whole proof of
        the write (no transfer thread, no HeadObject: a third of the time for the small files
        an extraction writes by the hundred); `last_modified` is then the time of the store's
        answer (its Date header, to the second). Above 8 MiB, boto3's managed transfer
        uploads the parts in parallel."""
        uri = self.uri(key)
        size = local_path.stat().st_size
        if size <= _SINGLE_PUT_BYTES:
            with self._errors("write", uri), local_path.open("rb") as body:
                response = self._client.put_object(
                    Bucket=self.bucket, Key=self._key(key), Body=body, ContentLength=size
                )
            date = response["ResponseMetadata"]["HTTPHeaders"].get("date")
            answered = parsedate_to_datetime(date).astimezone(UTC) if date else datetime.now(UTC)
            return ObjectInfo(key, size, answered, _unquote(response["ETag"]))
        with self._errors("write", uri):
            try:
                self._client.upload_file(str(local_path), self.bucket, self._key(key))
            # boto3 raises this while handling the ClientError that says what went wrong.
            except S3UploadFailedError as exc:
                if isinstance(exc.__context__, ClientError):
                    raise self._client_error(exc.__context__, "write", uri) from exc.__context__
                raise StorageError(f"cannot write {uri}: {exc}") from exc
        info = self.head(key)
        if info is None:
            raise StorageError(f"{uri} is missing right after its upload; check the S3 store")
        return info

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """As Storage.list; the whole listing is read and sorted before the first yield.

        AWS lists in key order, but some S3-compatible stores (SeaweedFS) list folder by
        folder, which puts 'a/b' before 'a-c'; sorting here gives one order everywhere.
        """
        full_prefix = self._root + _validate_prefix(prefix)
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket, Prefix=full_prefix, PaginationConfig={"PageSize": 1000}
        )
        with self._errors("list", f"{self.url}/{prefix}"):
            found = [
                ObjectInfo(
                    key=item["Key"][len(self._root) :],
                    size=item["Size"],
                    last_modified=item["LastModified"].astimezone(UTC),
                    etag=_unquote(item["ETag"]),
                )
                for page in pages
                for item in page.get("Contents", [])
            ]
        yield from sorted(
            (info for info in found if _key_problem(info.key) is None), key=lambda i: i.key
        )

    def delete(self, keys: Iterable[str]) -> int:
        unique = list(dict.fromkeys(validate_key(key) for key in keys))
        for start in range(0, len(unique), DELETE_BATCH_SIZE):
            batch = unique[start : start + DELETE_BATCH_SIZE]
            with self._errors("delete", f"{len(batch)} objects under {self.url}"):
                response = self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": self._root + key} for key in batch], "Quiet": True},
                )
            errors = response.get("Errors", [])
            if errors:
                first = errors[0]
                failed = f"s3://{self.bucket}/{first.get('Key', '')}"
                code = first.get("Code", "")
                hint = (
                    "check that the credentials may s3:DeleteObject"
                    if code in _ACCESS_CODES
                    else first.get("Message", "")
                )
                raise StorageError(
                    f"could not delete {len(errors)} of {len(batch)} objects, "
                    f"such as {failed} ({code}): {hint}"
                )
        return len(unique)

    def filesystem(self) -> tuple[pafs.FileSystem, str]:
        """One pyarrow S3FileSystem per storage (thread-safe), made on first use: a load reads a
        schema and then copies every file, and a second filesystem would open its connections
        anew."""
        if self._filesystem is None:
            self._filesystem = self._new_filesystem()
        return self._filesystem, f"{self.bucket}/{self._root}".rstrip("/")

    def _new_filesystem(self) -> pafs.S3FileSystem:
        endpoint = urlparse(self._config.endpoint_url) if self._config.endpoint_url else None
        return pafs.S3FileSystem(
            access_key=self._config.access_key_id,
            secret_key=self._secret(),
            region=self.region,
            endpoint_override=endpoint.netloc if endpoint else None,
            scheme=endpoint.scheme if endpoint else "https",
            force_virtual_addressing=self._config.addressing_style == "virtual",
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            request_timeout=READ_TIMEOUT_SECONDS,
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=self._max_attempts),
        )

    @contextmanager
    def _errors(self, action: str, uri: str) -> Iterator[None]:
        """Turn botocore's exceptions into StorageErrors that say what to check."""
        try:
            yield
        except ClientError as exc:
            raise self._client_error(exc, action, uri) from exc
        except (EndpointConnectionError, ConnectTimeoutError) as exc:
            raise StorageError(
                f"cannot reach the S3 endpoint {self._client.meta.endpoint_url} to {action} "
                f"{uri}: check storage.endpoint_url, the network and that the store is running"
            ) from exc
        except NoCredentialsError as exc:
            raise StorageError(
                f"no S3 credentials to {action} {uri}: set storage.access_key_id and "
                "storage.secret_access_key (as ${VAR} references), or the standard AWS "
                "variables, profile or role"
            ) from exc
        except BotoCoreError as exc:
            raise StorageError(f"cannot {action} {uri}: {exc}") from exc

    def _client_error(self, exc: ClientError, action: str, uri: str) -> StorageError:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code in _PRECONDITION_CODES or _status(exc) == 412:
            return PreconditionFailed(f"{uri} was not written: another writer changed it first")
        if code == "NoSuchBucket":
            return StorageError(
                f"bucket '{self.bucket}' does not exist (storage.url {self.url}): "
                "create it or correct storage.url"
            )
        if code in _NOT_FOUND_CODES:
            return ObjectNotFound(f"{uri} does not exist")
        if code in _ACCESS_CODES:
            return StorageError(
                f"access denied to {uri} ({code}): check the credentials "
                f"({self._credentials_hint()}) and that they may {action} in "
                f"bucket '{self.bucket}'"
            )
        return StorageError(f"cannot {action} {uri}: {code} {error.get('Message', '')}".rstrip())

    def _credentials_hint(self) -> str:
        """Where the access key came from and its first 4 characters; never the secret."""
        if self._config.access_key_id:
            return f"storage.access_key_id {self._config.access_key_id[:4]}..."
        credentials = self._session.get_credentials()
        if credentials is None:
            return "none found in the standard AWS chain"
        return f"access key id {credentials.access_key[:4]}... from the standard AWS chain"


def _timestamp(value: str) -> datetime:
    """botocore's timestamp parser for this adapter's clients: S3's ISO 8601 timestamps
    ('2026-11-26T17:45:27.000Z', one per listed object) by datetime.fromisoformat, which is ~50x
    faster than the dateutil parse botocore uses (most of a long listing's time went there);
    anything else (HTTP dates in headers, epoch numbers, no zone) by botocore's own parser."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return parse_timestamp(value)
    return parsed if parsed.tzinfo is not None else parse_timestamp(value)


def _unquote(etag: str) -> str:
    return etag.strip('"')


def _status(exc: ClientError) -> int | None:
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


# --------------------------------------------------------------------------- local folder


class LocalStorage(Storage):
    """A folder on this machine. Writes are atomic (temp file + rename) and durable (fsync).

    Every put_bytes holds an exclusive flock on `<root>/.s3rs-locks/<sha256 of key>` while it
    checks its condition and renames, so conditional writes are compare-and-swap between
    threads and processes on this machine. put_file takes no lock: it is for unique keys.
    Locks belong to the root, so compare-and-swap needs every writer of a key to use the same
    root (not one root nested in another). A '.s3rs-locks' folder is never listed.
    """

    def __init__(self, root: Path) -> None:
        if not root.is_absolute():
            raise StorageError(
                f"local storage needs an absolute folder, not '{root}' "
                "(pipelines.yaml resolves relative paths against its own folder)"
            )
        self.root = Path(os.path.normpath(root))
        self.url = f"file://{self.root.as_posix()}"
        self._locks = self.root / LOCK_FOLDER

    def _path(self, key: str) -> Path:
        validate_key(key)
        segments = key.split("/")
        if any(s == LOCK_FOLDER or s.startswith(TEMP_PREFIX) for s in segments):
            raise StorageError(
                f"invalid storage key {key!r}: '{LOCK_FOLDER}' and names starting with "
                f"'{TEMP_PREFIX}' are reserved by the local backend"
            )
        return self.root / key

    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        content_type: str | None = None,
    ) -> str:
        """As Storage.put_bytes; content_type is not stored by the local backend."""
        _check_conditions(if_match, if_none_match)
        path = self._path(key)
        uri = self.uri(key)
        with _os_errors("write", uri), self._locked(key):
            temp, etag = _write_temp(path, [data])
            try:
                if if_none_match:
                    try:
                        path.hardlink_to(temp)  # fails if the key exists, even without our lock
                    except FileExistsError as exc:
                        raise PreconditionFailed(f"{uri} was not written: it exists") from exc
                else:
                    if if_match is not None and _md5_of(path) != if_match:
                        raise PreconditionFailed(
                            f"{uri} was not written: another writer changed it first"
                        )
                    temp.replace(path)
            finally:
                temp.unlink(missing_ok=True)
            _fsync_folder(path.parent)
        return etag

    def get_bytes(self, key: str) -> tuple[bytes, str]:
        path = self._path(key)
        uri = self.uri(key)
        with _os_errors("read", uri):
            try:
                data = path.read_bytes()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
                raise ObjectNotFound(f"{uri} does not exist") from exc
        return data, hashlib.md5(data, usedforsecurity=False).hexdigest()

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        with _os_errors("read", self.uri(key)):
            return _info(key, path)

    def put_file(self, local_path: Path, key: str) -> ObjectInfo:
        path = self._path(key)
        uri = self.uri(key)
        # Opened first, so a missing source file stays the caller's own OSError.
        with local_path.open("rb") as source, _os_errors("write", uri):
            temp, etag = _write_temp(path, _chunks(source))
            try:
                temp.replace(path)
            finally:
                temp.unlink(missing_ok=True)
            _fsync_folder(path.parent)
            info = path.stat()
        return ObjectInfo(key, info.st_size, _mtime(info), etag)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        _validate_prefix(prefix)
        with _os_errors("list", f"{self.url}/{prefix}"):
            keys = sorted(self._walk(prefix))
            for key in keys:
                info = _info(key, self.root / key)
                if info is not None:  # else deleted since the walk
                    yield info

    def _walk(self, prefix: str) -> Iterator[str]:
        """Keys under `prefix`, unordered, walking only the deepest folder the prefix names."""
        folder = prefix.rpartition("/")[0]
        start = self.root / folder if folder else self.root
        for current, folders, files in os.walk(start, onerror=_raise_unless_missing):
            relative = Path(current).relative_to(self.root).as_posix()
            base = "" if relative == "." else f"{relative}/"
            folders[:] = [
                name
                for name in folders
                if name != LOCK_FOLDER and f"{base}{name}/".startswith(prefix)
            ]
            for name in files:
                key = base + name
                if (
                    not name.startswith(TEMP_PREFIX)
                    and key.startswith(prefix)
                    and _key_problem(key) is None
                ):
                    yield key

    def delete(self, keys: Iterable[str]) -> int:
        """As Storage.delete; folders left empty are removed, up to the root."""
        unique = list(dict.fromkeys(keys))
        paths = [self._path(key) for key in unique]  # all keys are checked before any delete
        for key, path in zip(unique, paths, strict=True):
            with _os_errors("delete", self.uri(key)), self._locked(key, discard=True):
                with suppress(FileNotFoundError, NotADirectoryError, IsADirectoryError):
                    path.unlink()
                self._prune(path.parent)
        return len(unique)

    def _prune(self, folder: Path) -> None:
        """Remove empty folders from `folder` up to (not including) the root."""
        while folder != self.root:
            try:
                folder.rmdir()
            except OSError:  # not empty (or gone): an ancestor cannot be empty either
                return
            folder = folder.parent

    def filesystem(self) -> tuple[pafs.FileSystem, str]:
        """pyarrow's LocalFileSystem and the root, which is created so pyarrow can write in it.

        pyarrow does not create parent folders; call fs.create_dir(parent) before writing
        below the root (harmless on S3, where it writes an empty marker that list() skips).
        """
        with _os_errors("create", self.url):
            self.root.mkdir(parents=True, exist_ok=True)
        return pafs.LocalFileSystem(), self.root.as_posix()

    @contextmanager
    def _locked(self, key: str, *, discard: bool = False) -> Iterator[None]:
        """Hold the key's exclusive lock; with discard, remove the lock file before releasing.

        Lock files would otherwise accumulate for deleted keys. A process that was waiting on
        a removed lock file holds a lock nobody else can see, so _flock retries until the file
        it locked is still the one at the path.
        """
        self._locks.mkdir(parents=True, exist_ok=True)
        path = self._locks / hashlib.sha256(key.encode()).hexdigest()
        fd = _flock(path)
        try:
            yield
        finally:
            if discard:
                path.unlink(missing_ok=True)
            os.close(fd)


def _flock(path: Path) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.path.samestat(os.fstat(fd), path.stat()):
                return fd
        except FileNotFoundError:  # removed by a delete() while we waited
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


@contextmanager
def _os_errors(action: str, uri: str) -> Iterator[None]:
    try:
        yield
    except PermissionError as exc:
        raise StorageError(
            f"permission denied to {action} {uri}: check the owner and mode of the folder"
        ) from exc
    except OSError as exc:
        raise StorageError(f"cannot {action} {uri}: {exc.strerror or exc}") from exc


def _raise_unless_missing(exc: OSError) -> None:
    """os.walk error handler: a missing folder has no keys; anything else is a real error."""
    if not isinstance(exc, FileNotFoundError | NotADirectoryError):
        raise exc


def _write_temp(path: Path, chunks: Iterable[bytes]) -> tuple[Path, str]:
    """Write a synced temp file next to `path`; return it and the content's md5 hex."""
    temp, fd = _create_temp(path)
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
                digest.update(chunk)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp, digest.hexdigest()


def _create_temp(path: Path) -> tuple[Path, int]:
    """Create the parent folders and an exclusive temp file in them.

    A concurrent delete() may prune a folder between mkdir and open; then try again.
    """
    retries = 3
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex}-{path.name[:100]}"
        try:
            return temp, os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileNotFoundError:
            retries -= 1
            if not retries:
                raise


def _chunks(source: BinaryIO) -> Iterator[bytes]:
    while chunk := source.read(_READ_CHUNK):
        yield chunk


def _md5_of(path: Path) -> str | None:
    try:
        with path.open("rb") as file:
            return hashlib.file_digest(file, "md5").hexdigest()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def _info(key: str, path: Path) -> ObjectInfo | None:
    """Size, mtime and md5 read from one open file, so they describe the same version."""
    try:
        with path.open("rb") as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode):
                return None
            etag = hashlib.file_digest(file, "md5").hexdigest()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    return ObjectInfo(key, info.st_size, _mtime(info), etag)


def _mtime(info: os.stat_result) -> datetime:
    return datetime.fromtimestamp(info.st_mtime, UTC)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
