"""A private PostgreSQL cluster on its own port, for tests that stop the database under a
running service: the shared server on 5432 is never touched. Run as root; the cluster runs as
the `postgres` user, listens on 127.0.0.1 only, trust authentication for `root`."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg


def _bin(name: str) -> str:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if not versions:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql")
    return str(versions[-1] / name)


class PrivateCluster:
    def __init__(self, port: int) -> None:
        # Under /tmp itself: the server user must reach it (pytest's folders are root-only).
        self.dir = Path(tempfile.mkdtemp(prefix="consent-ivr-pg-")) / "pgdata"
        self.port = port
        self.url = f"postgresql://root@127.0.0.1:{port}/consent"

    def _as_postgres(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            check=True,
            capture_output=True,
            timeout=timeout,
        )

    def create(self) -> PrivateCluster:
        self.dir.mkdir(parents=True)
        shutil.chown(self.dir, "postgres", "postgres")
        self.dir.parent.chmod(0o755)
        self._as_postgres(_bin("initdb"), "-D", str(self.dir), "-A", "trust", "-U", "root")
        self.start()
        with psycopg.connect(self.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE consent")
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        log = str(self.dir / "server.log")
        self._as_postgres(
            _bin("pg_ctl"), "-D", str(self.dir), "-o", options, "-l", log, "-w", "start"
        )

    def stop(self) -> None:
        self._as_postgres(_bin("pg_ctl"), "-D", str(self.dir), "-m", "immediate", "-w", "stop")

    def destroy(self) -> None:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                _bin("pg_ctl"),
                "-D",
                str(self.dir),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.dir.parent, ignore_errors=True)
