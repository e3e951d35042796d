"""flask-gosession: server-side sessions for Flask.

Public API::

    from flask_gosession import GoSession, rotate_sid, regenerate, destroy
"""
from __future__ import annotations

from .errors import ConfigError, GoSessionError, ProviderError, RegistryError, TokenError
from .extension import GoSession
from .lifecycle import destroy, regenerate, rotate_sid
from .manager import Manager
from .providers.base import Change, Outcome, Provider, Record
from .registry import register, unregister
from .tokens import gosession_token, gosession_token_field, token_exempt

__all__ = [
    "Change",
    "ConfigError",
    "GoSession",
    "GoSessionError",
    "Manager",
    "Outcome",
    "Provider",
    "ProviderError",
    "Record",
    "RegistryError",
    "TokenError",
    "destroy",
    "gosession_token",
    "gosession_token_field",
    "regenerate",
    "register",
    "rotate_sid",
    "token_exempt",
    "unregister",
]


def __getattr__(name: str) -> object:
    if name == "__version__":
        from importlib.metadata import version

        return version("flask-gosession")
    raise AttributeError(name)
