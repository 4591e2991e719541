"""Java programs from Maven Central: resolve a POM's runtime jars into a cache, once.

The local stack runs Apache Kafka from its jars this way; anything else the
machine's Java should run (e.g. a ZooKeeper for a replicated ClickHouse) goes
the same way.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from eventsieve.errors import MissingDependencyError, ServiceError


def resolve_jars(pom: str, libs_dir: Path, what: str, install_hint: str) -> None:
    """Copy the runtime dependencies of ``pom`` into ``libs_dir`` (replaced atomically).

    The POM is written next to ``libs_dir``; a half-resolved directory is
    never left where a caller would use it.
    """
    mvn = shutil.which("mvn")
    if mvn is None:
        raise MissingDependencyError("Maven (mvn)", install_hint)
    build = libs_dir.parent
    build.mkdir(parents=True, exist_ok=True)
    (build / "pom.xml").write_text(pom)
    staging = build / f"{libs_dir.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    result = subprocess.run(
        [mvn, "-q", "-B", "dependency:copy-dependencies",
         f"-DoutputDirectory={staging}", "-DincludeScope=runtime"],
        cwd=build, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
        raise ServiceError(f"Maven could not resolve {what}:\n{tail}")
    shutil.rmtree(libs_dir, ignore_errors=True)
    staging.rename(libs_dir)
