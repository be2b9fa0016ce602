"""``inspector review --config review.yaml --add-user NAME [--role R] [--password-file F]``.

The password comes from, in this order: ``--password-file`` (its first line), the
environment variable ``INSPECTOR_REVIEW_PASSWORD``, standard input when it is not a
terminal (its first line: ``printf '%s\\n' "$PW" | inspector review ... --add-user ann``),
or a prompt at a terminal, asked twice and compared. A missing or short password is a
clear error (InspectorError), never a traceback.
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import TextIO

from ..errors import InspectorError
from . import auth
from .db.store import Store

PASSWORD_ENV = "INSPECTOR_REVIEW_PASSWORD"


def read_password(
    name: str,
    password_file: Path | None = None,
    stdin: TextIO | None = None,
    env: dict | None = None,
    prompt=getpass.getpass,
) -> str:
    """The new user's password from the first source that has one (see the module)."""
    env = os.environ if env is None else env
    stdin = sys.stdin if stdin is None else stdin
    if password_file is not None:
        try:
            text = Path(password_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InspectorError(
                f"--password-file {password_file}: cannot read it ({exc})"
            ) from None
        return _first_line(text, f"--password-file {password_file}")
    if env.get(PASSWORD_ENV):
        return env[PASSWORD_ENV]
    if stdin is None or stdin.closed:
        raise InspectorError(f"no password: give --password-file, {PASSWORD_ENV} or standard input")
    if not stdin.isatty():
        return _first_line(stdin.readline(), "standard input")
    try:
        first = prompt(f"password for {name}: ")
        again = prompt(f"password for {name} (again): ")
    except (EOFError, KeyboardInterrupt):
        raise InspectorError("no password given; user not saved") from None
    if first != again:
        raise InspectorError("the two passwords differ; user not saved")
    return first


def _first_line(text: str, where: str) -> str:
    line = text.splitlines()[0] if text else ""
    if not line:
        raise InspectorError(f"{where}: empty; expected the password on its first line")
    return line


def add_user_command(
    database: str, name: str, role: str, password_file: Path | None = None, **sources
) -> str:
    """Read the password, save the user; the line to print."""
    password = read_password(name, password_file, **sources)
    auth.add_user(Store(database), name, password, role)
    return f"user {name} ({role}) saved in {database}"
