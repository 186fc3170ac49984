"""The peers: their virtual environments, and the command each one runs.

Each peer runs in a virtual environment of its own, created on first use under
benchmarks/.cache/venvs/NAME with pip (the registry pip is configured for) and reused while
its `installed.txt` lists the same packages. A peer that cannot be installed is reported as
unavailable, with pip's error, never dropped silently.

    dlt          dlt 1.x `sql_table` (backend pyarrow or connectorx) -> `filesystem` S3 Parquet
    sling        the Sling CLI binary (wheel `sling-linux-amd64`, built-in Parquet writer)
    connectorx   connectorx's Arrow stream -> pyarrow ParquetWriter -> S3 (the ceiling)
    mariadb      `mariadb --quick -B` dumping the table to a local file (the ceiling)
    profile      py-spy (and pyinstrument) for profiling s3rs
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from benchmarks import verify
from benchmarks.stack import CACHE

VENVS_DIR = CACHE / "venvs"
PEER_SCRIPTS = Path(__file__).resolve().parent / "peer_scripts"

VENV_PACKAGES: dict[str, list[str]] = {
    # dlt 1.31 has no sql_database extra: the source needs SQLAlchemy and a driver itself.
    "dlt": ["dlt[filesystem,parquet,s3]", "sqlalchemy", "pymysql", "connectorx"],
    # The `sling` package downloads its binary from GitHub at run time (not reachable here);
    # this wheel ships it.
    "sling": ["sling-linux-amd64"],
    "connectorx": ["connectorx", "pyarrow"],
    "profile": ["py-spy", "pyinstrument"],
}


class PeerUnavailable(Exception):
    """A peer could not be installed or found; the message says why."""


def ensure_venv(name: str, log: Callable[[str], None] = print) -> Path:
    """The venv's folder, created and installed when missing or stale."""
    folder = VENVS_DIR / name
    marker = folder / "installed.txt"
    wanted = "\n".join(VENV_PACKAGES[name]) + "\n"
    if marker.exists() and marker.read_text() == wanted:
        return folder
    log(f"creating the virtual environment {folder} ({', '.join(VENV_PACKAGES[name])})")
    # The interpreter running the benchmark (the project's Python 3.11) makes the venv.
    base = Path(getattr(sys, "_base_executable", sys.executable))
    if not folder.exists():
        result = subprocess.run(
            [str(base), "-m", "venv", str(folder)], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise PeerUnavailable(f"python -m venv failed: {result.stderr.strip()[-500:]}")
    result = subprocess.run(
        [str(folder / "bin" / "pip"), "install", "-q", *VENV_PACKAGES[name]],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if "is ignored" not in line]
        raise PeerUnavailable(
            f"pip install {' '.join(VENV_PACKAGES[name])} failed: {' '.join(errors)[-500:]}"
        )
    marker.write_text(wanted)
    return folder


def sling_binary(folder: Path) -> Path:
    found = sorted(folder.glob("lib/python*/site-packages/sling_linux_amd64/bin/sling-linux-amd64"))
    if not found:
        raise PeerUnavailable(f"no sling-linux-amd64 binary in {folder}")
    return found[0]


def mariadb_client() -> Path:
    """The `mariadb` client the local stack uses (scripts/stack runs it from PATH)."""
    found = shutil.which("mariadb")
    if found is None:
        raise PeerUnavailable("no `mariadb` client on PATH (scripts/bootstrap installs it)")
    return Path(found)


@dataclass
class Prepared:
    """A command ready to be measured, how to check its output, and how to clean up."""

    command: list[str]
    env: dict[str, str]
    verify: Callable[[], verify.Output]
    stdout_path: Path | None = None
    cleanup: Callable[[], None] = field(default=lambda: None)


def _mysql_urls(env: dict[str, str], database: str) -> tuple[str, str]:
    """(SQLAlchemy+PyMySQL URL, connectorx URL); connectorx over TCP like everyone else."""
    user = quote(env["MYSQL_USER"], safe="")
    password = quote(env["MYSQL_PASSWORD"], safe="")
    where = f"{env['MYSQL_HOST']}:{env['MYSQL_PORT']}/{database}"
    return (
        f"mysql+pymysql://{user}:{password}@{where}",
        # Without prefer_socket=false connectorx asks for @@socket and reconnects over it.
        f"mysql://{user}:{password}@{where}?prefer_socket=false",
    )


def _clean_env(env: dict[str, str]) -> dict[str, str]:
    """The stack's env without MYSQL_* / PG* (which database clients obey)."""
    return {k: v for k, v in env.items() if not k.startswith(("MYSQL", "PG"))}


def prepare_dlt(
    env: dict[str, str], backend: str, database: str, prefix: str, workdir: Path
) -> Prepared:
    folder = ensure_venv("dlt")
    sqlalchemy_url, connectorx_url = _mysql_urls(env, database)
    bucket_url = f"s3://{env['S3_BUCKET']}/{prefix}"
    dataset = "bench"
    run_env = {
        **_clean_env(env),
        "RUNTIME__DLTHUB_TELEMETRY": "false",
        "DESTINATION__FILESYSTEM__BUCKET_URL": bucket_url,
        "DESTINATION__FILESYSTEM__CREDENTIALS__AWS_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"],
        "DESTINATION__FILESYSTEM__CREDENTIALS__AWS_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"],
        "DESTINATION__FILESYSTEM__CREDENTIALS__ENDPOINT_URL": env["S3_ENDPOINT_URL"],
        "DESTINATION__FILESYSTEM__CREDENTIALS__REGION_NAME": env["AWS_REGION"],
        "BENCH_BACKEND": backend,
        "BENCH_SQLALCHEMY_URL": sqlalchemy_url,
        "BENCH_CONNECTORX_URL": connectorx_url,
        "BENCH_TABLE": "orders",
        "BENCH_DATASET": dataset,
        "BENCH_PIPELINES_DIR": str(workdir / "dlt_pipelines"),
    }
    return Prepared(
        command=[str(folder / "bin" / "python"), str(PEER_SCRIPTS / "dlt_run.py")],
        env=run_env,
        verify=lambda: verify.parquet_prefix(env, f"{prefix}/{dataset}/orders/"),
        cleanup=lambda: shutil.rmtree(workdir / "dlt_pipelines", ignore_errors=True),
    )


def prepare_sling(env: dict[str, str], database: str, prefix: str, workdir: Path) -> Prepared:
    binary = sling_binary(ensure_venv("sling"))
    user = quote(env["MYSQL_USER"], safe="")
    password = quote(env["MYSQL_PASSWORD"], safe="")
    source = f"mysql://{user}:{password}@{env['MYSQL_HOST']}:{env['MYSQL_PORT']}/{database}"
    target = (
        f'{{"type": "s3", "bucket": "{env["S3_BUCKET"]}", '
        f'"access_key_id": "{env["AWS_ACCESS_KEY_ID"]}", '
        f'"secret_access_key": "{env["AWS_SECRET_ACCESS_KEY"]}", '
        f'"endpoint": "{env["S3_ENDPOINT_URL"]}", "region": "{env["AWS_REGION"]}"}}'
    )
    run_env = {
        **_clean_env(env),
        "BENCH_SOURCE": source,
        "BENCH_TARGET": target,
        "SLING_DISABLE_TELEMETRY": "true",
        # Its default Parquet path goes through a DuckDB it downloads at run time.
        "SLING_DUCKDB_COMPUTE": "false",
        "SLING_HOME_DIR": str(workdir / "sling_home"),
    }
    command = [
        str(binary),
        "run",
        "--src-conn",
        "BENCH_SOURCE",
        "--src-stream",
        f"{database}.orders",
        "--tgt-conn",
        "BENCH_TARGET",
        "--tgt-object",
        f"s3://{env['S3_BUCKET']}/{prefix}/orders/",
        "--tgt-options",
        '{"format": "parquet", "file_max_rows": 500000}',
    ]
    return Prepared(
        command=command,
        env=run_env,
        verify=lambda: verify.parquet_prefix(env, f"{prefix}/orders/"),
    )


def prepare_connectorx(env: dict[str, str], database: str, prefix: str) -> Prepared:
    folder = ensure_venv("connectorx")
    _, connectorx_url = _mysql_urls(env, database)
    run_env = {
        **_clean_env(env),
        "BENCH_CONNECTORX_URL": connectorx_url,
        "BENCH_QUERY": "SELECT * FROM orders",
        "BENCH_S3_PATH": f"{env['S3_BUCKET']}/{prefix}/orders.parquet",
        "BENCH_BATCH_ROWS": "100000",
    }
    return Prepared(
        command=[str(folder / "bin" / "python"), str(PEER_SCRIPTS / "cx_run.py")],
        env=run_env,
        verify=lambda: verify.parquet_prefix(env, f"{prefix}/"),
    )


def prepare_mariadb(env: dict[str, str], database: str, workdir: Path) -> Prepared:
    client = mariadb_client()
    workdir.mkdir(parents=True, exist_ok=True)
    dump = workdir / "orders.tsv"
    command = [
        str(client),
        "--no-defaults",
        "--protocol=TCP",
        f"--host={env['MYSQL_HOST']}",
        f"--port={env['MYSQL_PORT']}",
        f"--user={env['MYSQL_USER']}",
        "--quick",
        "-B",
        "-e",
        "SELECT * FROM orders",
        database,
    ]
    run_env = {**_clean_env(env), "MYSQL_PWD": env["MYSQL_PASSWORD"]}
    return Prepared(
        command=command,
        env=run_env,
        verify=lambda: verify.text_dump(dump),
        stdout_path=dump,
        cleanup=lambda: dump.unlink(missing_ok=True),
    )


def installed_versions(name: str) -> dict[str, str]:
    """`pip freeze` of a peer's venv, reduced to the packages that matter, for the record."""
    folder = VENVS_DIR / name
    if not (folder / "bin" / "pip").exists():
        return {}
    result = subprocess.run(
        [str(folder / "bin" / "pip"), "freeze"], capture_output=True, text=True, check=False
    )
    keep = {"dlt", "connectorx", "pyarrow", "sqlalchemy", "pymysql", "sling-linux-amd64"}
    versions = {}
    for line in result.stdout.splitlines():
        package, _, version = line.partition("==")
        if package.lower() in keep:
            versions[package.lower()] = version
    return versions


def environ_for_subprocess(env: dict[str, str], snapshot: Path | None = None) -> dict[str, str]:
    """The env the s3rs child gets: the stack's variables, `benchmarks` importable, and
    s3rs_dagster from `snapshot` when given (else from the work tree)."""
    repo = str(Path(__file__).resolve().parent.parent)
    paths = [str(snapshot) if snapshot else None, repo, env.get("PYTHONPATH")]
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, paths))}
