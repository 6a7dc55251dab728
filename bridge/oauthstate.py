"""Signed, expiring, single-use OAuth ``state`` values binding an installation to a retailer.

An operator asks the bridge for an installation URL for one retailer; the ``state`` in it
is ``v1.<payload>.<mac>``: the payload (base64url JSON: retailer id, audience — the partner
account the retailer is configured with —, a random nonce, expiry in epoch seconds) signed
with HMAC-SHA256. The MAC key is derived from a key the daemon already holds (the token
encryption key), under a purpose label, so the encryption key itself never signs anything
and no new secret has to be distributed; every replica sharing that key accepts the states
the others issued.

A callback's ``state`` is checked in this order, without any I/O: present, well formed
(ASCII, at most :data:`MAX_STATE_LENGTH` characters), MAC valid (compared in constant time;
the payload is parsed only after), issued for this retailer and this audience, not expired.
Only then is it *consumed*: its nonce is claimed in the store (``Store.claim``, atomic on
every backend), so a state is accepted once, across restarts and replicas; a second use is
refused. A state is consumed before the partner is called, whatever that call's outcome:
a failed installation needs a new URL.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from bridge.errors import BridgeError
from bridge.store import ClaimState, Store

MAX_STATE_LENGTH = 1024
"""Longer ``state`` values are refused before anything else looks at them."""
MAX_TTL = 86400.0
"""The longest lifetime a state may have. A nonce claimed by a process that died before
recording it as used stays refused this long: longer than the state itself lives."""
CLAIM_SCOPE = "oauth-state"
_VERSION = "v1"
_PURPOSE = b"returns-bridge oauth state v1"


class StateRefused(BridgeError):
    """The ``state`` (or the field named) does not prove the bridge issued this installation.

    ``status`` is the HTTP status to answer (400 malformed or missing, 403 refused); the
    message never contains the state's value."""

    def __init__(self, message: str, *, status: int = 403, field: str = "state") -> None:
        super().__init__(message)
        self.status = status
        self.field = field


@dataclass(frozen=True)
class InstallState:
    """What a verified ``state`` says."""

    retailer: str
    audience: str
    nonce: str
    expires_at: float


def derive_key(secret: bytes) -> bytes:
    """The MAC key for states, derived from ``secret`` (e.g. the token encryption key)."""
    return hmac.new(secret, _PURPOSE, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class StateSigner:
    """Issues and verifies states; ``clock`` is epoch seconds (injectable)."""

    def __init__(self, secret: bytes, ttl: float, clock: Callable[[], float] = time.time) -> None:
        if not 0 < ttl <= MAX_TTL:
            raise ValueError(f"a state lives between 0 and {MAX_TTL:.0f} seconds")
        self._key = derive_key(secret)
        self.ttl = ttl
        self._clock = clock

    def __repr__(self) -> str:
        return f"StateSigner(ttl={self.ttl})"

    def _mac(self, payload: str) -> str:
        message = f"{_VERSION}.{payload}".encode("ascii")
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest())

    def issue(self, retailer: str, audience: str) -> str:
        """A new state for ``retailer`` configured with ``audience``, valid for ``ttl``."""
        claims = {
            "r": retailer,
            "a": audience,
            "n": secrets.token_urlsafe(16),
            "x": int(self._clock() + self.ttl),
        }
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"{_VERSION}.{payload}.{self._mac(payload)}"

    def verify(self, state: str | None, retailer: str, audience: str) -> InstallState:
        """The claims of ``state`` if it was issued by this key for ``retailer`` and
        ``audience`` and has not expired; else :class:`StateRefused`. Consumes nothing."""
        if not state:
            raise StateRefused(
                "the installation redirect carries no state: install through a URL made by"
                " the bridge (install-url)",
                status=400,
            )
        if len(state) > MAX_STATE_LENGTH or not state.isascii():
            raise StateRefused("state is not one the bridge issues", status=400)
        version, _, rest = state.partition(".")
        payload, _, mac = rest.partition(".")
        if version != _VERSION or not payload or not mac:
            raise StateRefused("state is not one the bridge issues", status=400)
        if not hmac.compare_digest(mac.encode("ascii"), self._mac(payload).encode("ascii")):
            raise StateRefused("state was not issued by this bridge (bad signature)")
        try:
            claims = json.loads(_unb64(payload))
            issued = InstallState(
                retailer=str(claims["r"]),
                audience=str(claims["a"]),
                nonce=str(claims["n"]),
                expires_at=float(claims["x"]),
            )
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError, binascii.Error):
            raise StateRefused("state is not one the bridge issues", status=400) from None
        if issued.retailer != retailer:
            raise StateRefused("state was issued for another retailer")
        if issued.audience != audience:
            raise StateRefused("state was issued for another account of this retailer")
        if issued.expires_at <= self._clock():
            raise StateRefused("state has expired: make a new installation URL")
        return issued


async def consume(store: Store, state: InstallState) -> None:
    """Accept ``state`` once: record its nonce in ``store``; :class:`StateRefused` when it
    was used before (here or by another replica, before or after a restart)."""
    fingerprint = hashlib.sha256(
        json.dumps([state.retailer, state.audience, state.expires_at]).encode()
    ).hexdigest()
    claim = await store.claim(CLAIM_SCOPE, state.nonce, fingerprint, lease_seconds=MAX_TTL)
    if claim.state is not ClaimState.NEW:
        raise StateRefused("state was used already: make a new installation URL")
    await store.complete_claim(CLAIM_SCOPE, state.nonce, {"retailer": state.retailer})
