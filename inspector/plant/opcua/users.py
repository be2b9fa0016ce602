"""OPC UA users: names, roles and scrypt password hashes, from one YAML file.

    users:
      - {name: mes, role: operator, password: "scrypt$16384$8$1$SALT$HASH"}
      - {name: qa-lead, role: engineer, password: "scrypt$..."}

Roles: ``viewer`` may browse, read and subscribe (an MES dashboard); ``operator`` may also
start, stop and halt (the state machine's methods); ``engineer`` may also select recipes
(models). Passwords are kept only as scrypt hashes (the standard library's
``hashlib.scrypt``, memory-hard; no extra dependency). Add or change a user with

    python -m inspector.plant.opcua.users add FILE NAME ROLE    # asks for the password
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import hmac
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from ...errors import ConfigError

ROLES = ("viewer", "operator", "engineer")
_N, _R, _P = 2**14, 8, 1  # scrypt cost: ~50 ms and 16 MiB per login


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    password_hash: str


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(want),
            maxmem=256 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def load_users(path: Path) -> dict[str, Account]:
    """The accounts in ``path``; a ConfigError names what is wrong."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"plant.opcua.users_file: cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"plant.opcua.users_file: {path} is not YAML: {exc}") from None
    users = data.get("users") if isinstance(data, dict) else None
    if not isinstance(users, list):
        raise ConfigError(f"plant.opcua.users_file: {path} needs a 'users:' list")
    out: dict[str, Account] = {}
    for i, u in enumerate(users):
        where = f"plant.opcua.users_file: {path}: users[{i}]"
        if not isinstance(u, dict) or set(u) != {"name", "role", "password"}:
            raise ConfigError(f"{where}: needs exactly name, role and password")
        name, role, pw = (str(u["name"]), str(u["role"]), str(u["password"]))
        if role not in ROLES:
            raise ConfigError(f"{where}: role must be one of {', '.join(ROLES)}, got {role!r}")
        if not pw.startswith("scrypt$") or pw.count("$") != 5:
            raise ConfigError(
                f"{where}: password must be a scrypt hash "
                "(python -m inspector.plant.opcua.users add FILE NAME ROLE)"
            )
        if name in out:
            raise ConfigError(f"{where}: user {name!r} appears twice")
        out[name] = Account(name, role, pw)
    return out


def add_user(path: Path, name: str, role: str, password: str) -> None:
    """Add ``name`` to the users file (or replace its role and password); the file is
    written owner-readable only."""
    if role not in ROLES:
        raise ConfigError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    path = Path(path)
    users = []
    if path.exists():
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        users = [u for u in data.get("users", []) if u.get("name") != name]
    users.append({"name": name, "role": role, "password": hash_password(password)})
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        yaml.safe_dump({"users": users}, f, sort_keys=False)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m inspector.plant.opcua.users", description="OPC UA users and their roles"
    )
    sub = ap.add_subparsers(dest="verb", required=True)
    add = sub.add_parser("add", help="add a user or change its role and password")
    add.add_argument("file", type=Path)
    add.add_argument("name")
    add.add_argument("role", choices=ROLES)
    add.add_argument("--password-file", type=Path, help="read the password from this file")
    args = ap.parse_args(argv)
    if args.password_file is not None:
        password = args.password_file.read_text(encoding="utf-8").strip()
    elif not sys.stdin.isatty():
        password = sys.stdin.readline().strip()
    else:
        password = getpass.getpass("password: ")
        if password != getpass.getpass("again: "):
            print("the passwords differ", file=sys.stderr)
            return 2
    if not password:
        print("an empty password is not allowed", file=sys.stderr)
        return 2
    try:
        add_user(args.file, args.name, args.role, password)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"{args.name} ({args.role}) written to {args.file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
