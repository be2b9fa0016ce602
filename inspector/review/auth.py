"""Logins, roles and CSRF tokens.

Passwords are stored as argon2id hashes (argon2-cffi). A login creates a server-side
session (a random token in an HttpOnly, SameSite=Lax cookie) with its own CSRF token;
every POST must carry that token (form field ``csrf`` or header ``X-CSRF-Token``). The
login form, before any session exists, uses a double-submit token (cookie + field).
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ..errors import InspectorError
from .store import Store

ROLES = ("viewer", "reviewer", "admin")
COOKIE = "review_session"
LOGIN_COOKIE = "review_login"
_hasher = PasswordHasher()
_DUMMY = _hasher.hash("not a password")


@dataclass(frozen=True)
class User:
    name: str
    role: str
    csrf: str

    def can(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


def add_user(store: Store, name: str, password: str, role: str) -> None:
    if role not in ROLES:
        raise InspectorError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    if not name or len(password) < 8:
        raise InspectorError("a user needs a name and a password of at least 8 characters")
    store.put_user(name, _hasher.hash(password), role)


def login(store: Store, name: str, password: str, hours: float) -> tuple[str, User] | None:
    """A new session token and the user, or None (same time taken for unknown names)."""
    row = store.user(name)
    try:
        _hasher.verify(row["hash"] if row else _DUMMY, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if row is None:
        return None
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    store.add_session(token, name, csrf, time.time() + hours * 3600)
    return token, User(name, row["role"], csrf)


def user_of(store: Store, token: str | None) -> User | None:
    if not token:
        return None
    row = store.session(token)
    return User(row["user"], row["role"], row["csrf"]) if row else None


def same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


def new_token() -> str:
    return secrets.token_urlsafe(32)
