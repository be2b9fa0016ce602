"""A real PostgreSQL for the SPC store's tests: initdb into a temp dir, pg_ctl on a free port.

Debian's ``postgresql`` package (``apt-get install -y postgresql``) puts the binaries under
/usr/lib/postgresql/VERSION/bin. PostgreSQL refuses to run as root, so as root the server runs
as the ``postgres`` user (``runuser -u postgres --``). The test is skipped, with the reason,
only when the binaries are missing.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from inspector.lab.broker import free_port, wait_for_port


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: p.split("/")[4])
    if found:
        return Path(found[-1]).parent
    ctl = shutil.which("pg_ctl")
    return Path(ctl).parent if ctl else None


@pytest.fixture(scope="session")
def postgres_url():
    """postgresql://postgres@127.0.0.1:PORT/postgres of a throwaway server for the session."""
    bindir = pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql)")
    pytest.importorskip("psycopg", reason="pip install 'psycopg[binary]' (the spc extra)")
    root = os.geteuid() == 0
    as_user = ["runuser", "-u", "postgres", "--"] if root else []
    tmp = Path(tempfile.mkdtemp(prefix="spc-pg-"))
    data = tmp / "data"
    if root:
        shutil.chown(tmp, "postgres")
    port = free_port()
    subprocess.run(
        [*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *as_user,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(tmp / "log"),
            "-w",
            "-o",
            f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        assert wait_for_port("127.0.0.1", port), "postgres did not listen"
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(tmp, ignore_errors=True)
