"""dagster-webserver serves the shipped code location: its GraphQL API lists every asset, check
and sensor of the local pipelines."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from s3rs_dagster.config import load_config
from s3rs_dagster_tests.conftest import Stack

REPO = Path(__file__).resolve().parents[2]
WEBSERVER = Path(sys.executable).parent / "dagster-webserver"
QUERY = """{ repositoriesOrError { ... on RepositoryConnection { nodes { location { name }
  sensors { name } assetNodes { assetKey { path }
  assetChecksOrError { ... on AssetChecks { checks { name } } } } } } } }"""
RESOURCES = """{ allTopLevelResourceDetailsOrError(repositorySelector:
  {repositoryLocationName: "s3rs_dagster", repositoryName: "__repository__"}) {
  ... on ResourceDetailsList { results { name configuredValues { key value type } } } } }"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(port: int, query: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def test_graphql_lists_every_asset_check_and_sensor_of_the_shipped_pipelines(
    stack: Stack, tmp_path: Path
) -> None:
    config = load_config(REPO / "pipelines.yaml")
    expected_assets = {
        (pipeline, table, kind)
        for pipeline, pipeline_config in config.pipelines.items()
        for table in pipeline_config.tables
        for kind in ("s3_batches", "redshift")
    }
    port = free_port()
    server = subprocess.Popen(
        [str(WEBSERVER), "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO,
        env={
            **os.environ,
            "DAGSTER_HOME": str(tmp_path),
            "S3RS_CONFIG": str(REPO / "pipelines.yaml"),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                answer = graphql(port, QUERY)
                resources = graphql(port, RESOURCES)
                break
            except OSError:
                assert server.poll() is None, "dagster-webserver exited"
                assert time.monotonic() < deadline, "dagster-webserver did not answer in 120 s"
                time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=30)
    (repository,) = answer["data"]["repositoriesOrError"]["nodes"]
    assert repository["location"]["name"] == "s3rs_dagster"
    assets = {tuple(node["assetKey"]["path"]): node for node in repository["assetNodes"]}
    assert set(assets) == expected_assets
    for key, node in assets.items():
        checks = sorted(check["name"] for check in node["assetChecksOrError"]["checks"])
        assert checks == (
            ["row_count_matches_state", "window_rows_match_source"]
            if key[2] == "redshift"
            else [
                "files_match_manifest",
                "source_schema_unchanged",
                "watermark_never_moves_backwards",
            ]
        )
    sensors = {sensor["name"] for sensor in repository["sensors"]}
    assert sensors == {
        "default_automation_condition_sensor",
        *(f"{pipeline}__{table.replace('.', '_')}__new_files" for pipeline, table, _ in assets),
    }

    details = resources["data"]["allTopLevelResourceDetailsOrError"]["results"]
    values = {
        (resource["name"], value["key"]): value
        for resource in details
        for value in resource["configuredValues"]
    }
    password = values[("source_local_mariadb", "password")]
    assert (password["type"], password["value"]) == ("ENV_VAR", "MYSQL_PASSWORD")
    assert os.environ["MYSQL_PASSWORD"] not in json.dumps(resources)
    assert os.environ["REDSHIFT_PASSWORD"] not in json.dumps(resources)
