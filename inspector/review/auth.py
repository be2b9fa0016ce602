"""Logins, roles and CSRF tokens.

Passwords are stored as argon2id hashes (argon2-cffi). A login creates a server-side
session (a random token in an HttpOnly, SameSite=Lax cookie) with its own CSRF token;
every POST must carry that token (form field ``csrf`` or header ``X-CSRF-Token``). The
login form, before any session exists, uses a double-submit token (cookie + field).

Failed logins slow the next ones down, per user name and per client address: after
``free`` failures (since the last success, within 15 minutes) each next attempt must wait
1, 2, 4 … seconds (at most ``most_s``) after the latest failure; an attempt made sooner is
answered 429 without its password being looked at. Every attempt is kept in the store
(``login_attempts``: time, name, address, outcome) and failures are logged.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ..errors import InspectorError
from .db.store import Store

log = logging.getLogger(__name__)
ROLES = ("viewer", "reviewer", "admin")
WINDOW_S = 900.0  # failures older than this are forgotten
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


@dataclass(frozen=True)
class Throttle:
    """How failed logins slow the next ones (server.login_free_attempts, login_delay_max_s)."""

    free: int = 3
    most_s: float = 300.0

    def wait_s(self, store: Store, name: str, address: str, now: float | None = None) -> float:
        """Seconds until an attempt for ``name`` from ``address`` may be checked (0: now)."""
        now = time.time() if now is None else now
        wait = 0.0
        for column, value in (("name", name), ("address", address)):
            n, last = store.login_failures(column, value, now - WINDOW_S)
            if n >= self.free and last is not None:
                delay = min(self.most_s, 2.0 ** min(n - self.free, 30))
                wait = max(wait, last + delay - now)
        return wait

    def attempt(
        self, store: Store, name: str, password: str, address: str, hours: float
    ) -> tuple[str, User] | float | None:
        """A login through the throttle: (token, user) on success, None for a wrong name or
        password, or the seconds to wait when this attempt came too soon (not checked)."""
        wait = self.wait_s(store, name, address)
        if wait > 0:
            log.warning("login for %r from %s refused: %.0f s to wait", name[:80], address, wait)
            return wait
        result = login(store, name, password, hours)
        store.add_login_attempt(name, address, result is not None)
        if result is None:
            n, _ = store.login_failures("name", name, time.time() - WINDOW_S)
            log.warning("login failed for %r from %s (%d in a row)", name[:80], address, n)
        else:
            log.info("login: %s from %s", name, address)
        return result


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
