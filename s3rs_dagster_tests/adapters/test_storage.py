"""The storage adapter on a local folder and on the real SeaweedFS S3 of the local stack."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import SecretStr

from s3rs_dagster.adapters.storage import (
    LocalStorage,
    ObjectNotFound,
    PreconditionFailed,
    S3Storage,
    Storage,
    StorageError,
    open_storage,
    validate_key,
)
from s3rs_dagster.config import StorageConfig
from s3rs_dagster_tests.conftest import Stack


def s3_config(url: str, **changes: Any) -> StorageConfig:
    """A config for the local stack's S3; callers depend on the `stack` fixture, which checks
    that its variables are in the environment."""
    values: dict[str, Any] = {
        "url": url,
        "endpoint_url": os.environ["S3_ENDPOINT_URL"],
        "region": os.environ["AWS_REGION"],
        "access_key_id": os.environ["AWS_ACCESS_KEY_ID"],
        "secret_access_key": SecretStr(os.environ["AWS_SECRET_ACCESS_KEY"]),
    }
    return StorageConfig(**{**values, **changes})


def open_url(url: str) -> Storage:
    return open_storage(s3_config(url) if url.startswith("s3://") else StorageConfig(url=url))


@pytest.fixture
def s3_root(stack: Stack) -> Iterator[str]:
    """A unique s3:// root for one test; everything under it is deleted afterwards."""
    url = f"s3://{stack['S3_BUCKET']}/test-storage/{uuid4().hex}"
    yield url
    storage = open_url(url)
    storage.delete(info.key for info in storage.list())


@pytest.fixture(params=["local", "s3"])
def base(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty root URL on each backend."""
    if request.param == "local":
        return f"file://{tmp_path}/store"
    return request.getfixturevalue("s3_root")


def keys(storage: Storage, prefix: str = "") -> list[str]:
    return [info.key for info in storage.list(prefix)]


# --------------------------------------------------------------------------- shared behaviour


def test_put_get_head_list_delete(base: str) -> None:
    storage = open_url(base)
    assert storage.url == base
    assert storage.uri("p/t/x.json") == f"{base}/p/t/x.json"

    etag = storage.put_bytes("p/t/x.json", b'{"a": 1}', content_type="application/json")
    assert storage.get_bytes("p/t/x.json") == (b'{"a": 1}', etag)
    info = storage.head("p/t/x.json")
    assert info is not None
    assert (info.key, info.size, info.etag) == ("p/t/x.json", 8, etag)
    assert info.last_modified.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - info.last_modified) < timedelta(minutes=5)

    for key in ("p/t/y.json", "p/u/z", "a/b", "a-c", "q"):
        storage.put_bytes(key, key.encode())
    # S3 order is byte order: '-' sorts before '/', so 'a-c' comes before 'a/b'.
    assert keys(storage) == ["a-c", "a/b", "p/t/x.json", "p/t/y.json", "p/u/z", "q"]
    assert keys(storage, "p/") == ["p/t/x.json", "p/t/y.json", "p/u/z"]
    assert keys(storage, "p/t/") == ["p/t/x.json", "p/t/y.json"]
    assert keys(storage, "p/t/x") == ["p/t/x.json"]
    assert keys(storage, "a") == ["a-c", "a/b"]
    assert keys(storage, "nothing/") == []
    assert [i for i in storage.list("p/t/") if i.key == "p/t/x.json"] == [info]

    assert storage.head("p/t/missing") is None
    with pytest.raises(ObjectNotFound, match=f"{base}/p/t/missing does not exist"):
        storage.get_bytes("p/t/missing")

    assert storage.delete(["p/t/x.json", "p/t/x.json", "p/t/never-there"]) == 2
    assert keys(storage, "p/") == ["p/t/y.json", "p/u/z"]
    assert storage.delete(keys(storage)) == 5
    assert keys(storage) == []
    assert storage.delete([]) == 0


def test_keys_are_relative_to_the_root_and_siblings_stay_out(base: str) -> None:
    outer = open_url(base)
    inner = open_url(f"{base}/backups")
    sibling = open_url(f"{base}/backups2")
    inner.put_bytes("p/x", b"inner")
    sibling.put_bytes("p/y", b"sibling")

    assert keys(inner) == ["p/x"]
    assert keys(sibling) == ["p/y"]
    assert keys(outer) == ["backups/p/x", "backups2/p/y"]
    assert outer.get_bytes("backups/p/x")[0] == b"inner"
    assert inner.uri("p/x") == outer.uri("backups/p/x") == f"{base}/backups/p/x"

    assert inner.delete(["p/y"]) == 1  # a missing key of its own root, not the sibling's
    assert sibling.get_bytes("p/y")[0] == b"sibling"


def test_put_file_reads_back_identical(base: str, tmp_path: Path) -> None:
    storage = open_url(base)
    body = os.urandom(12 * 1024 * 1024)
    source = tmp_path / "big.bin"
    source.write_bytes(body)

    info = storage.put_file(source, "files/big.bin")

    assert (info.key, info.size) == ("files/big.bin", len(body))
    assert storage.head("files/big.bin") == info
    assert storage.get_bytes("files/big.bin") == (body, info.etag)
    if base.startswith("s3://"):
        assert "-" in info.etag, "12 MB goes up as a multipart upload"
    else:
        assert info.etag == hashlib.md5(body, usedforsecurity=False).hexdigest()


def test_conditional_writes(base: str) -> None:
    storage = open_url(base)
    first = storage.put_bytes("state/doc.json", b"v1", if_none_match=True)
    with pytest.raises(PreconditionFailed, match=r"state/doc\.json"):
        storage.put_bytes("state/doc.json", b"other", if_none_match=True)
    assert storage.get_bytes("state/doc.json") == (b"v1", first)

    second = storage.put_bytes("state/doc.json", b"v2", if_match=first)
    assert second != first
    with pytest.raises(PreconditionFailed):
        storage.put_bytes("state/doc.json", b"stale", if_match=first)
    assert storage.get_bytes("state/doc.json") == (b"v2", second)

    with pytest.raises(PreconditionFailed):
        storage.put_bytes("state/missing.json", b"x", if_match=second)
    assert storage.head("state/missing.json") is None
    with pytest.raises(ValueError, match="exclude each other"):
        storage.put_bytes("state/doc.json", b"x", if_match=second, if_none_match=True)


def _increment(url: str, times: int, barrier: Any) -> None:
    """Add 1 to the counter `times` times with compare-and-swap (in a child process)."""
    storage = open_url(url)
    barrier.wait()
    for _ in range(times):
        while True:
            data, etag = storage.get_bytes("counter.json")
            value = json.loads(data)["value"] + 1
            try:
                storage.put_bytes(
                    "counter.json", json.dumps({"value": value}).encode(), if_match=etag
                )
                break
            except PreconditionFailed:
                continue


def test_compare_and_swap_between_processes(base: str) -> None:
    storage = open_url(base)
    storage.put_bytes("counter.json", b'{"value": 0}', if_none_match=True)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_increment, args=(base, 50, barrier)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0, 0]
    assert json.loads(storage.get_bytes("counter.json")[0]) == {"value": 100}


BAD_KEYS = ["../x", "/abs", "a//b", "a/./b", "", "a/", "a\\b", "a\x00b", "a/../../etc"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_validate_key_refuses_unsafe_keys(key: str) -> None:
    with pytest.raises(StorageError) as caught:
        validate_key(key)
    assert f"invalid storage key {key!r}" in str(caught.value)


def test_every_method_validates_its_key(base: str, tmp_path: Path) -> None:
    storage = open_url(base)
    source = tmp_path / "f"
    source.write_bytes(b"x")
    calls = {
        "uri": lambda key: storage.uri(key),
        "put_bytes": lambda key: storage.put_bytes(key, b"x"),
        "get_bytes": lambda key: storage.get_bytes(key),
        "head": lambda key: storage.head(key),
        "put_file": lambda key: storage.put_file(source, key),
        "delete": lambda key: storage.delete(["ok", key]),
    }
    for name, call in calls.items():
        for key in ("../x", "/abs", "a//b", "a/./b", ""):
            with pytest.raises(StorageError, match="invalid storage key") as caught:
                call(key)
            assert repr(key) in str(caught.value), name
    for prefix in ("/abs", "a//", "../", "a/./"):
        with pytest.raises(StorageError, match=f"invalid storage prefix {prefix!r}"):
            list(storage.list(prefix))
    assert keys(storage) == [], "nothing was written"


def test_filesystem_reads_and_writes_parquet(base: str) -> None:
    storage = open_url(base)
    fs, root = storage.filesystem()
    table = pa.table({"id": [1, 2, 3], "name": ["a", "b", None]})

    pq.write_table(table, f"{root}/t.parquet", filesystem=fs)

    assert pq.read_table(f"{root}/t.parquet", filesystem=fs).equals(table)
    data, _ = storage.get_bytes("t.parquet")
    assert pq.read_table(pa.BufferReader(data)).equals(table)
    assert keys(storage) == ["t.parquet"]


# --------------------------------------------------------------------------- S3


def test_bucket_without_prefix(stack: Stack, s3_root: str) -> None:
    bucket = stack["S3_BUCKET"]
    whole = open_url(f"s3://{bucket}")
    prefix = s3_root.removeprefix(f"s3://{bucket}/")
    assert whole.url == f"s3://{bucket}"
    assert whole.uri(f"{prefix}/k") == f"{s3_root}/k"

    whole.put_bytes(f"{prefix}/k", b"v")

    assert keys(whole, f"{prefix}/") == [f"{prefix}/k"]
    assert keys(open_url(s3_root)) == ["k"]
    assert whole.filesystem()[1] == bucket


def test_list_pages_past_1000_objects(s3_root: str) -> None:
    storage = open_url(s3_root)
    many = [f"many/{i:04d}" for i in range(1005)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda key: storage.put_bytes(key, b"."), many))

    assert keys(storage, "many/") == many
    assert storage.delete(many) == 1005
    assert keys(storage) == []


def test_get_client_is_the_boto3_client(s3_root: str) -> None:
    storage = open_url(s3_root)
    assert isinstance(storage, S3Storage)
    storage.put_bytes("k", b"v")
    bucket, _, prefix = s3_root.removeprefix("s3://").partition("/")
    body = storage.get_client().get_object(Bucket=bucket, Key=f"{prefix}/k")["Body"].read()
    assert body == b"v"


def test_wrong_secret_is_access_denied_without_the_secret(
    stack: Stack, s3_root: str, tmp_path: Path
) -> None:
    wrong = "wrong-secret-do-not-print-0123456789"
    storage = open_storage(s3_config(s3_root, secret_access_key=SecretStr(wrong)))
    source = tmp_path / "f"
    source.write_bytes(b"v")
    calls = (
        lambda: storage.put_bytes("k", b"v"),
        lambda: storage.head("k"),
        lambda: storage.put_file(source, "k"),
    )
    for call in calls:
        with pytest.raises(StorageError) as caught:
            call()
        message = str(caught.value)
        assert "access denied to " + s3_root in message
        assert "check the credentials" in message
        assert wrong not in message and stack["AWS_SECRET_ACCESS_KEY"] not in message
        assert stack["AWS_ACCESS_KEY_ID"] not in message, "only the first 4 characters"
    assert open_url(s3_root).head("k") is None


def test_missing_bucket_is_named(stack: Stack) -> None:
    # Reads only: SeaweedFS (unlike AWS) creates a missing bucket on PutObject.
    bucket = f"s3rs-missing-{uuid4().hex[:8]}"
    storage = open_url(f"s3://{bucket}/backups")
    for call in (lambda: list(storage.list()), lambda: storage.get_bytes("k")):
        with pytest.raises(StorageError, match=f"bucket '{bucket}' does not exist"):
            call()


def test_closed_port_cannot_reach(stack: Stack) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    storage = S3Storage(
        s3_config(f"s3://{stack['S3_BUCKET']}/x", endpoint_url=endpoint), max_attempts=1
    )
    with pytest.raises(StorageError, match=f"cannot reach the S3 endpoint {endpoint}"):
        storage.get_bytes("k")


# --------------------------------------------------------------------------- local folder


def test_local_root_forms(tmp_path: Path) -> None:
    plain = open_storage(StorageConfig(url=str(tmp_path / "a")))
    assert isinstance(plain, LocalStorage)
    assert plain.url == f"file://{tmp_path}/a"
    assert plain.uri("x/y") == f"file://{tmp_path}/a/x/y"
    with pytest.raises(StorageError, match="absolute"):
        LocalStorage(Path("relative/folder"))


def test_local_writes_leave_no_debris(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.put_bytes("p/t/x", b"1")
    storage.put_bytes("p/t/y", b"2", if_none_match=True)
    storage.put_file(tmp_path / "p" / "t" / "x", "p/u/z")
    (tmp_path / "p" / "t" / ".tmp-0123-x").write_bytes(b"half written")

    assert keys(storage) == ["p/t/x", "p/t/y", "p/u/z"], "temp files and locks are not listed"

    assert storage.delete(["p/t/x", "p/t/y", "p/u/z"]) == 3
    (tmp_path / "p" / "t" / ".tmp-0123-x").unlink()
    assert storage.delete(["p/t/x"]) == 1  # prunes the folders the stray file kept
    assert sorted(path.name for path in tmp_path.iterdir()) == [".s3rs-locks"]
    assert list((tmp_path / ".s3rs-locks").iterdir()) == [], "deleting a key drops its lock"


def test_local_reserved_names_are_refused(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    for key in (".s3rs-locks/x", "p/.s3rs-locks/x", "p/.tmp-x", ".tmp-1-y"):
        with pytest.raises(
            StorageError, match=re.escape(f"invalid storage key {key!r}") + ".*reserved"
        ):
            storage.put_bytes(key, b"x")


def test_local_os_errors_name_the_uri(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.put_bytes("a", b"a file, not a folder")
    with pytest.raises(StorageError, match=f"cannot write {storage.uri('a/b')}: "):
        storage.put_bytes("a/b", b"x")
    assert storage.head("a/b") is None
