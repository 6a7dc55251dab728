"""Outbound HTTP policy shared by every adapter: rate limits, credentials, retries, errors."""

from __future__ import annotations

from bridge.http.client import (
    Authorized,
    Credentials,
    DestinationHealth,
    DestinationLimits,
    HttpClient,
    OutboundRequest,
    Response,
    StaticCredentials,
    with_headers,
)
from bridge.http.journal import AdmissionJournal, AdmissionLog
from bridge.http.policy import Action, Backoff, ResponsePolicy
from bridge.http.ratelimit import Priority, RateLimiter, Window

__all__ = [
    "Action",
    "AdmissionJournal",
    "AdmissionLog",
    "Authorized",
    "Backoff",
    "Credentials",
    "DestinationHealth",
    "DestinationLimits",
    "HttpClient",
    "OutboundRequest",
    "Priority",
    "RateLimiter",
    "Response",
    "ResponsePolicy",
    "StaticCredentials",
    "Window",
    "with_headers",
]
