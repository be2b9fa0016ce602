"""Who may do what on the OPC UA server: logins from the users file, roles on methods.

A session logs in with a user name and password (checked against the scrypt hash), or
anonymously where ``allow_anonymous`` says so. Anonymous sessions may browse, read and
subscribe; they call no method and write nothing. A logged-in ``viewer`` may also call the
lookups (GetResultById, GetRecipeListFiltered ...); an ``operator`` the state machine's
methods (start, stop, halt: they control inspection); an ``engineer`` may also prepare
recipes (change the model). Method calls are checked per method before they run (``RoleRules``): a call
the role does not allow is answered BadUserAccessDenied.
"""

from __future__ import annotations

import logging

from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.crypto.permission_rules import (
    USER_TYPES,
    PermissionRuleset,
    User,
    UserRole,
)
from asyncua.ua.ua_binary import struct_from_binary

from .users import Account, verify_password

log = logging.getLogger(__name__)

RANK = {"viewer": 0, "operator": 1, "engineer": 2}
CALL = ua.NodeId(ua.ObjectIds.CallRequest_Encoding_DefaultBinary)
WRITE = ua.NodeId(ua.ObjectIds.WriteRequest_Encoding_DefaultBinary)
READ_ONLY = {ua.NodeId(t) for t in USER_TYPES} - {CALL, WRITE}


class Users:
    """asyncua's UserManager: a session's user, or None (BadUserAccessDenied)."""

    def __init__(self, accounts: dict[str, Account], allow_anonymous: bool) -> None:
        self.accounts = accounts
        self.allow_anonymous = allow_anonymous

    def get_user(self, iserver, username=None, password=None, certificate=None) -> User | None:
        if username is None:  # anonymous (X509 user tokens are not offered)
            return User(role=UserRole.Anonymous) if self.allow_anonymous else None
        account = self.accounts.get(username or "")
        if (
            account is None
            or password is None
            or not verify_password(password, account.password_hash)
        ):
            log.warning("OPC UA: login refused for user %r", username)
            return None
        log.info("OPC UA: %s (%s) logged in", account.name, account.role)
        return User(role=UserRole.User, name=account.name)

    def role(self, user: User | None) -> str | None:
        if user is None or user.role != UserRole.User or user.name not in self.accounts:
            return None
        return self.accounts[user.name].role


class RoleRules(PermissionRuleset):
    """Which service requests a session may make; for calls, which methods."""

    def __init__(self, users: Users) -> None:
        self.users = users
        self.method_roles: dict[ua.NodeId, str] = {}  # method -> least role; others: any user

    def check_validity(self, user, action_type_id, body) -> bool:
        if action_type_id in READ_ONLY:
            return True
        role = self.users.role(user)
        if action_type_id != CALL or role is None:
            return False  # nothing is writable; anonymous sessions call nothing
        try:
            params = struct_from_binary(
                ua.CallParameters, body.copy() if isinstance(body, Buffer) else Buffer(body)
            )
        except Exception:  # a malformed request is the server's to answer
            return True
        for m in params.MethodsToCall:
            need = self.method_roles.get(m.MethodId)
            if need is not None and RANK[role] < RANK[need]:
                log.warning(
                    "OPC UA: %s (%s) may not call %s (needs %s)", user.name, role, m.MethodId, need
                )
                return False
        return True
