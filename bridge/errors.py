"""The error taxonomy, grouped by what happens next.

``BridgeError``
  ``ConfigError``        the operator must fix the configuration; the daemon does not start.
  ``MappingError``       the input cannot be turned into the canonical domain (or back);
                         the payload is quarantined / the effect dead-lettered, never retried.
  ``DeliveryError``      an outbound call failed.
    ``RetriableDeliveryError``  transient (timeout, connect error, 5xx, 429): retry later,
                                honouring ``retry_after`` when the partner gave one;
                                ``outcome_unknown`` when the request may have reached it.
      ``NotReady``              waits for something outside the bridge (an installation).
    ``PermanentDeliveryError``  the partner refused the request (other 4xx): dead letter.
      ``CredentialsRefused``    a 401 that refreshing cannot cure (static credentials, or
                                refused again after the one refresh): dead letter.
  ``StoreError``         the durable store failed; the caller must not acknowledge.
  ``EffectKeyTaken``     a must-queue effect's idempotency key exists already: queuing it
                         would silently drop a change, so the transaction fails instead.

Messages carry status codes, paths and header *names*, never header values or secrets.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Something in returns-bridge failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or type(self).__name__).strip())


class ConfigError(BridgeError):
    """The configuration is invalid: run `returns-bridge check --config PATH` for every problem."""

    def __init__(self, message: str | None = None, problems: list[str] | None = None) -> None:
        self.problems = list(problems or [])
        if message is None and self.problems:
            message = "invalid configuration:\n" + "\n".join(self.problems)
        super().__init__(message)


class MappingError(BridgeError):
    """The payload cannot be mapped: fix the mapping or the data, then replay the dead letter."""

    def __init__(self, message: str | None = None, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class DeliveryError(BridgeError):
    """An outbound call failed."""

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int | None = None,
        destination: str | None = None,
        body: str | None = None,
    ) -> None:
        self.status = status
        self.destination = destination
        self.body = body
        super().__init__(message)


class RetriableDeliveryError(DeliveryError):
    """A transient failure (timeout, connection error, 5xx, 429): the call will be retried."""

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int | None = None,
        destination: str | None = None,
        body: str | None = None,
        retry_after: float | None = None,
        outcome_unknown: bool = False,
    ) -> None:
        self.retry_after = retry_after
        self.outcome_unknown = outcome_unknown
        """The request may have reached the partner (it held a connection, then timed out
        or lost it); false when it is known not to have been sent (no connection)."""
        super().__init__(message, status=status, destination=destination, body=body)


class PermanentDeliveryError(DeliveryError):
    """The partner refused the request: it is kept as a dead letter for inspection and replay."""


class CredentialsRefused(PermanentDeliveryError):
    """credentials refused (401): fix the partner's credentials in the configuration (or
    install the app again), then replay the dead letter.

    Raised at once for credentials that cannot be refreshed (a static token), and after the
    one refresh for those that can; never retried in place or for days."""


class NotReady(RetriableDeliveryError):
    """The partner cannot be called until something outside the bridge changes (an app
    installation, a credential). Effects wait and are retried (``retry_after``) instead of
    becoming dead letters; a synchronous caller answers 503; no call retries it in place."""


class StoreError(BridgeError):
    """The durable store failed: nothing was acknowledged."""


class EffectKeyTaken(BridgeError):
    """An effect that must be queued (``NewEffect.must_queue``) has an idempotency key that
    exists already: dropping it would lose a change, so its transaction fails instead."""
