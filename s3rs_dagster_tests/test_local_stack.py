"""The local stack (scripts/stack): real servers answer, with real credentials."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from pathlib import Path

import boto3
import psycopg
import pymysql
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from s3rs_dagster_tests.conftest import REPO, Stack, read_stack_env

STACK_SCRIPT = REPO / "scripts" / "stack"


def s3_client(stack: Stack, secret: str | None = None):
    return boto3.client(
        "s3",
        endpoint_url=stack["S3_ENDPOINT_URL"],
        aws_access_key_id=stack["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=secret or stack["AWS_SECRET_ACCESS_KEY"],
        region_name=stack["AWS_REGION"],
        config=BotoConfig(retries={"max_attempts": 1}),
    )


def test_mariadb_answers_and_user_may_create_databases(stack: Stack) -> None:
    connection = pymysql.connect(
        host=stack["MYSQL_HOST"],
        port=int(stack["MYSQL_PORT"]),
        user=stack["MYSQL_USER"],
        password=stack["MYSQL_PASSWORD"],
        database=stack["MYSQL_DATABASE"],
    )
    name = f"s3rs_probe_{uuid.uuid4().hex[:8]}"
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{name}`")
            cursor.execute(f"CREATE TABLE `{name}`.t (id BIGINT PRIMARY KEY, note VARCHAR(10))")
            cursor.execute(f"INSERT INTO `{name}`.t VALUES (1, '😀')")
            cursor.execute(f"SELECT note FROM `{name}`.t")
            assert cursor.fetchone() == ("😀",), "utf8mb4 round-trips a 4-byte character"
            cursor.execute("SELECT CONVERT_TZ('2025-01-01 00:00:00', 'UTC', 'Europe/Berlin')")
            assert str(cursor.fetchone()[0]) == "2025-01-01 01:00:00", "time zone tables loaded"
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        connection.close()


def test_postgres_answers(stack: Stack) -> None:
    with stack.postgres() as connection:
        row = connection.execute("SELECT current_user, current_database(), 6 * 7").fetchone()
    assert row == (stack["POSTGRES_USER"], stack["POSTGRES_DATABASE"], 42)


def test_postgres_refuses_a_wrong_password(stack: Stack) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            host=stack["POSTGRES_HOST"],
            port=int(stack["POSTGRES_PORT"]),
            user=stack["POSTGRES_USER"],
            password="wrong",
            dbname=stack["POSTGRES_DATABASE"],
        )


def test_s3_put_list_get_delete(stack: Stack) -> None:
    client = s3_client(stack)
    prefix = f"probe/{uuid.uuid4().hex}/"
    body = os.urandom(6 * 1024 * 1024)  # big enough for a real multipart upload
    client.upload_fileobj(
        __import__("io").BytesIO(body),
        stack["S3_BUCKET"],
        prefix + "big.bin",
        Config=boto3.s3.transfer.TransferConfig(
            multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024
        ),
    )
    client.put_object(Bucket=stack["S3_BUCKET"], Key=prefix + "small.txt", Body=b"hello")
    listed = client.list_objects_v2(Bucket=stack["S3_BUCKET"], Prefix=prefix)
    assert sorted(item["Key"] for item in listed["Contents"]) == [
        prefix + "big.bin",
        prefix + "small.txt",
    ]
    got = client.get_object(Bucket=stack["S3_BUCKET"], Key=prefix + "big.bin")["Body"].read()
    assert got == body
    for key in ("big.bin", "small.txt"):
        client.delete_object(Bucket=stack["S3_BUCKET"], Key=prefix + key)
    assert client.list_objects_v2(Bucket=stack["S3_BUCKET"], Prefix=prefix)["KeyCount"] == 0


def test_s3_refuses_a_wrong_secret(stack: Stack) -> None:
    client = s3_client(stack, secret="not-the-secret")
    with pytest.raises(ClientError) as caught:
        client.put_object(Bucket=stack["S3_BUCKET"], Key="probe/denied.txt", Body=b"x")
    assert caught.value.response["Error"]["Code"] in ("SignatureDoesNotMatch", "AccessDenied")
    listed = s3_client(stack).list_objects_v2(Bucket=stack["S3_BUCKET"], Prefix="probe/denied.txt")
    assert listed["KeyCount"] == 0


def test_bastion_forwards_to_mariadb_with_the_client_key(stack: Stack) -> None:
    result = subprocess.run(
        [
            "ssh",
            "-i",
            stack["SSH_BASTION_KEY_PATH"],
            "-p",
            stack["SSH_BASTION_PORT"],
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            f"{stack['SSH_BASTION_USER']}@{stack['SSH_BASTION_HOST']}",
            "echo",
            "bastion-ok",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "bastion-ok"


# --------------------------------------------------------------------------- the script


def run_stack(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(STACK_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_up_on_a_running_stack_is_a_no_op(stack: Stack) -> None:
    stack_dir = Path(os.environ.get("S3RS_STACK_DIR", REPO / ".stack"))
    before = {p.name: p.read_text() for p in (stack_dir / "pids").glob("*.pid")}
    result = run_stack("up", str(stack_dir))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("already running") == 5
    after = {p.name: p.read_text() for p in (stack_dir / "pids").glob("*.pid")}
    assert after == before
    assert read_stack_env(stack_dir / "stack.env")["MYSQL_PASSWORD"] == stack["MYSQL_PASSWORD"]


def test_status_reports_every_service_up(stack: Stack) -> None:
    stack_dir = Path(os.environ.get("S3RS_STACK_DIR", REPO / ".stack"))
    result = run_stack("status", str(stack_dir))
    assert result.returncode == 0, result.stdout
    for service in ("mariadb", "postgres", "sshd", "seaweedfs"):
        assert f"{service:<10} up" in result.stdout


def test_a_busy_port_is_refused_by_name(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = run_stack("up", str(tmp_path / "stack"), env={"S3RS_STACK_MYSQL_PORT": str(port)})
    assert result.returncode == 1
    assert f"port {port} needed by mariadb is already in use" in result.stderr
    assert not list((tmp_path / "stack").glob("pids/*.pid")), "nothing was started"


def test_status_and_down_of_a_missing_stack(tmp_path: Path) -> None:
    assert run_stack("status", str(tmp_path / "none")).returncode == 3
    result = run_stack("down", str(tmp_path / "none"))
    assert result.returncode == 0 and "nothing to stop" in result.stdout


def test_bad_usage_exits_2() -> None:
    result = run_stack("sideways")
    assert result.returncode == 2 and "usage" in result.stderr
