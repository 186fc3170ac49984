"""The local stack's connection variables, read from .stack/stack.env (as the tests do)."""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"
CACHE = BENCH / ".cache"
RESULTS = BENCH / "results"
BUCKET_PREFIX = "bench"
"""Everything the benchmark writes to S3 lives under s3://$S3_BUCKET/bench/."""

_EXPORT = re.compile(r"^export (\w+)='(.*)'$")


def stack_env() -> dict[str, str]:
    """os.environ plus the stack's stack.env (its values win); fails with the fix if absent."""
    folder = Path(os.environ.get("S3RS_STACK_DIR", REPO / ".stack"))
    path = folder / "stack.env"
    if not path.exists():
        raise SystemExit(f"{path} is missing: start the local stack with `scripts/stack up`")
    env = dict(os.environ)
    for line in path.read_text().splitlines():
        match = _EXPORT.match(line.strip())
        if match:
            env[match.group(1)] = match.group(2)
    return env


def database_name(rows: int) -> str:
    """The benchmark's own database on the stack's MariaDB, one per table size."""
    return f"s3rs_bench_{rows}"


def s3rs_snapshot(ref: str) -> tuple[Path | None, str]:
    """A copy of s3rs_dagster at a git ref, so concurrent edits of the work tree do not leak
    into a measurement; (None, 'worktree') for the work tree itself.

    `git archive REF s3rs_dagster` is unpacked once under .cache/s3rs/<commit>/; put that
    folder first on PYTHONPATH and `import s3rs_dagster` loads the snapshot (the editable
    install's finder comes after the path entries).
    """
    import subprocess

    if ref == "worktree":
        return None, "worktree"
    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    folder = CACHE / "s3rs" / sha
    if not (folder / "s3rs_dagster" / "__init__.py").exists():
        folder.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", sha, "s3rs_dagster"],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder, sha
