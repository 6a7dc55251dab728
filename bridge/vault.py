"""Partner tokens kept encrypted at rest in the store.

The key comes from an environment variable the retailer's config names (Fernet: AES-128
in CBC mode with an HMAC, from ``cryptography``); ``returns-bridge`` never writes it
anywhere. Tokens are stored as JSON documents under a name (e.g. ``returnlogic:<team>``)
with a version, so that two writers never overwrite each other blindly: ``put`` is a
compare-and-set on the version read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from bridge.errors import ConfigError, StoreError
from bridge.store import Store


@dataclass(frozen=True)
class Sealed:
    """A decrypted token document and the version it was read at."""

    data: dict[str, Any]
    version: int


def key_from_env(variable: str, env: Mapping[str, str] | None = None) -> bytes:
    """The Fernet key in ``variable`` (a clear error naming the variable, never the value)."""
    value = (env if env is not None else os.environ).get(variable)
    if not value:
        raise ConfigError(
            f"environment variable {variable} is not set: it holds the key that encrypts"
            " partner tokens at rest (make one with: python -c 'from cryptography.fernet"
            " import Fernet; print(Fernet.generate_key().decode())')"
        )
    try:
        Fernet(value.encode())
    except ValueError:
        raise ConfigError(
            f"environment variable {variable} is not a valid key (32 url-safe base64 bytes)"
        ) from None
    return value.encode()


class TokenVault:
    def __init__(self, store: Store, key: bytes) -> None:
        self._store = store
        self._fernet = Fernet(key)

    async def get(self, name: str) -> Sealed | None:
        found = await self._store.get_token(name)
        if found is None:
            return None
        secret, version = found
        try:
            data = json.loads(self._fernet.decrypt(secret))
        except InvalidToken:
            raise StoreError(
                f"token {name!r} cannot be decrypted: the encryption key changed"
            ) from None
        return Sealed(data, version)

    async def put(self, name: str, data: dict[str, Any], expected_version: int | None) -> bool:
        """Write ``data`` if the stored version is still ``expected_version``."""
        secret = self._fernet.encrypt(json.dumps(data, sort_keys=True).encode())
        return await self._store.put_token(name, secret, expected_version)
