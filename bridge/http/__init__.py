"""Outbound HTTP policy shared by every adapter: rate limits, retries, error translation."""

from __future__ import annotations

from bridge.http.client import DestinationLimits, HttpClient, OutboundRequest, Response
from bridge.http.policy import Action, Backoff, ResponsePolicy
from bridge.http.ratelimit import Priority, RateLimiter, Window

__all__ = [
    "Action",
    "Backoff",
    "DestinationLimits",
    "HttpClient",
    "OutboundRequest",
    "Priority",
    "RateLimiter",
    "Response",
    "ResponsePolicy",
    "Window",
]
