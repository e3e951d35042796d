"""flask-gosession: server-side sessions for Flask.

Public API::

    from flask_gosession import GoSession, rotate_sid, regenerate, destroy
    from flask_gosession import login_user_session, sessions_of, revoke_session, revoke_user
    from flask_gosession import session_info
"""
from __future__ import annotations

from .errors import (
    ConfigError,
    GoSessionError,
    ProviderError,
    RegistryError,
    SessionLimitReached,
    TokenError,
    UserIndexUnsupported,
)
from .extension import GoSession
from .info import SessionInfo, session_info
from .lifecycle import destroy, regenerate, rotate_sid
from .manager import Manager
from .providers.base import Change, Outcome, Provider, Record
from .registry import register, unregister
from .tokens import gosession_token, gosession_token_field, token_exempt
from .users import (
    DeviceSession,
    login_user_session,
    logout_user_session,
    revoke_session,
    revoke_user,
    sessions_of,
)

__all__ = [
    "Change",
    "ConfigError",
    "DeviceSession",
    "GoSession",
    "GoSessionError",
    "Manager",
    "Outcome",
    "Provider",
    "ProviderError",
    "Record",
    "RegistryError",
    "SessionInfo",
    "SessionLimitReached",
    "TokenError",
    "UserIndexUnsupported",
    "destroy",
    "gosession_token",
    "gosession_token_field",
    "login_user_session",
    "logout_user_session",
    "regenerate",
    "register",
    "revoke_session",
    "revoke_user",
    "rotate_sid",
    "session_info",
    "sessions_of",
    "token_exempt",
    "unregister",
]


def __getattr__(name: str) -> object:
    if name == "__version__":
        from importlib.metadata import version

        return version("flask-gosession")
    raise AttributeError(name)
