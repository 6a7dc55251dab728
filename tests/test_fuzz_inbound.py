"""Hostile input against the real daemon process, generated from the ``/openapi.json`` it serves.

The daemon (``python -m bridge run``) runs against the three sandboxes (Optoro, ReturnLogic,
Kibo: real aiohttp servers on 127.0.0.1, in a thread of this process) with a SQLite file. Two
retailers cover every security scheme: ``acme`` (Optoro HTTP Basic, Kibo API-key header) and
``beta`` (Optoro API-key header, Kibo HTTP Basic); ReturnLogic webhooks carry a query key.

For every operation of the served document, hypothesis draws requests from the operation's own
schemas (a small generator for the JSON Schema subset pydantic writes, which refuses unknown
keywords): bodies valid for the schema, valid bodies with one thing broken, arbitrary JSON, raw
bytes; header, path and query parameters from their schemas or hostile (non-ASCII, raw bytes,
odd digits); hostile extra headers; credentials right, missing, wrong or malformed. An explicit
corpus holds issue 9's inputs (nesting >= 1000 levels, 4301-digit integers, lone surrogates,
NaN, duplicate keys, ``Basic é``, a 0xff API key, ``X-Optiturn-Api-Version: ²``, another team's
OAuth code, ...) and the guide's samples (exchange orders also with SKUs of the sandbox's
catalog, so some are placed, repeated and conflicted). Cases run one at a time on one keep-alive
connection, seeded (``FUZZ_SEED``, printed), explicit and generate phases only (no shrinking);
then a burst of 60 distinct invalid bodies on 10 connections covers the receive/quarantine race.

After every case: no 5xx (a 503 with ``Retry-After``, the documented back-pressure and "partner
unavailable, nothing done" answer, is counted instead); the daemon process alive; ``/healthz``
200; an unauthenticated request got 401/400 and stored nothing (inbox row count unchanged); an
authenticated refusal is a JSON error naming the field and, on a body endpoint, quarantined
(its inbox row ``quarantined`` with the reason), unless the refusal is no verdict on the input
(409 for a reused ``original_order_id``, 413 for a body too large to keep); an authenticated
body that the schema calls invalid is never accepted (the schema *is* the validation). "Invalid"
is the schema plus the limits every reader shares: UTF-8, no lone surrogate, nesting and
integers Python's parser reads; duplicate keys and NaN are left to the daemon's documented
choice. A message HTTP itself forbids (a control character in a header) is refused by aiohttp's
parser with a text 400 before the application sees it: counted (``http_parser_400``), not a
failure. At the end: every inbox row is one an authenticated sender was told about, no secret
is in the daemon's log, and a restart (SIGTERM, start) stays up: ``/readyz`` 200, inbox drained,
still alive.

A daemon that exits is recorded (case, exit code, traceback head from its log) and started
again, so the run goes on and reports every problem; when it exits again at once (a crash loop
on a stored item), that is recorded, the pending items are marked quarantined in the SQLite
file (what an operator would have to do, also recorded) and the run goes on. Each operation's
test fails on its own problems; the last one on any problem of the run. ``FUZZ_CASES``
(default 1000) sets the cases of each primary operation (aliases and the second retailer get a
quarter, the daemon's own routes a twentieth); ``FUZZ_REPORT`` where the JSON report of every
problem and figure goes (default: ``fuzz-report.json`` in the test's temporary folder).
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jsonschema
import pytest
from hypothesis import HealthCheck, Phase, example, given, seed, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate as validate_openapi

from adapters.kibo.sandbox import running_sandbox as running_kibo
from adapters.optoro.sandbox import running_sandbox as running_optoro
from adapters.returnlogic.sandbox import running_sandbox as running_returnlogic

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO.parent / "shared" / "fixtures"
FUZZ_CASES = int(os.environ.get("FUZZ_CASES", "1000"))
FUZZ_SEED = int(os.environ.get("FUZZ_SEED", "20261203"))
FUZZ_REPORT = os.environ.get("FUZZ_REPORT")
"""Where to write the report (default: the test's temporary folder)."""
MAX_BODY = 65536

OPTORO_CLIENT = ("fuzz-bridge", "fuzz-optoro-secret-7c1")
KIBO_TOKEN = "fuzz-kibo-token-91f"
HOOK_SECRET = "fuzz-rl-hook-secret-5d2"
SECRETS = {
    "FUZZ_OPTORO_SECRET": OPTORO_CLIENT[1],
    "FUZZ_KIBO_TOKEN": KIBO_TOKEN,
    "FUZZ_RL_HOOK": HOOK_SECRET,
    "FUZZ_ACME_HOOK_PASSWORD": "acme-basic-pass-3e8",
    "FUZZ_ACME_KIBO_NOTIFY": "acme-kibo-notify-0b4",
    "FUZZ_BETA_OPTORO_KEY": "beta-optoro-key-6a9",
    "FUZZ_BETA_KIBO_PASSWORD": "beta-kibo-pass-2f7",
}
RETAILERS = {
    "acme": {"optiturn": "acme-optiturn", "team": "acme-team"},
    "beta": {"optiturn": "beta-optiturn", "team": "beta-team"},
}
CREDENTIALS: dict[tuple[str, str], tuple[str, ...]] = {
    # (retailer, platform) -> ("basic", user, password) | ("header", name, key) | ("query", ...)
    ("acme", "optoro"): ("basic", "optoro", SECRETS["FUZZ_ACME_HOOK_PASSWORD"]),
    ("acme", "kibo"): ("header", "X-Kibo-Secret", SECRETS["FUZZ_ACME_KIBO_NOTIFY"]),
    ("acme", "returnlogic"): ("query", "key", HOOK_SECRET),
    ("beta", "optoro"): ("header", "X-Api-Key", SECRETS["FUZZ_BETA_OPTORO_KEY"]),
    ("beta", "kibo"): ("basic", "kibo", SECRETS["FUZZ_BETA_KIBO_PASSWORD"]),
    ("beta", "returnlogic"): ("query", "key", HOOK_SECRET),
}

PRIMARY = FUZZ_CASES
SECONDARY = max(FUZZ_CASES // 4, 1)
DAEMON_OWN = max(FUZZ_CASES // 20, 1)
OPERATIONS: list[tuple[str, str, int]] = [
    # (method, path, cases): every operation the daemon serves, in the order they run
    ("POST", "/retailers/acme/optoro/rmas", PRIMARY),
    ("GET", "/retailers/acme/optoro/sku/{variant_identifier}/variants", PRIMARY),
    ("POST", "/retailers/acme/optoro/exchange_orders", PRIMARY),
    ("POST", "/retailers/acme/kibo/notifications", PRIMARY),
    ("POST", "/retailers/acme/returnlogic/webhooks", PRIMARY),
    ("GET", "/retailers/acme/returnlogic/oauth/callback", PRIMARY),
    ("GET", "/retailers/acme/optoro/sku/{variant_identifier}/exchange_variants", SECONDARY),
    ("POST", "/retailers/acme/optoro/orders", SECONDARY),
    ("POST", "/retailers/beta/optoro/rmas", SECONDARY),
    ("GET", "/retailers/beta/optoro/sku/{variant_identifier}/variants", SECONDARY),
    ("GET", "/retailers/beta/optoro/sku/{variant_identifier}/exchange_variants", DAEMON_OWN),
    ("POST", "/retailers/beta/optoro/exchange_orders", SECONDARY),
    ("POST", "/retailers/beta/optoro/orders", DAEMON_OWN),
    ("POST", "/retailers/beta/kibo/notifications", SECONDARY),
    ("POST", "/retailers/beta/returnlogic/webhooks", SECONDARY),
    ("GET", "/retailers/beta/returnlogic/oauth/callback", SECONDARY),
    ("GET", "/healthz", DAEMON_OWN),
    ("GET", "/readyz", DAEMON_OWN),
    ("GET", "/openapi.json", DAEMON_OWN),
]
NOT_A_VERDICT = {409, 413}
"""Refusals of an authenticated body that say nothing about the input itself."""


# --- the world: sandboxes in a thread, the daemon as a process ---------------------------------


class Sandboxes:
    """The three sandboxes on 127.0.0.1, served by an event loop in a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stopping: asyncio.Event | None = None
        self.urls: dict[str, str] = {}
        self.skus: dict[str, list[str]] = {}
        """SKUs in each team's sandbox catalog (exchange options, exchange orders that succeed)."""
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="sandboxes", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to the test thread
            self.error = exc
            self.ready.set()
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        self.stopping = asyncio.Event()
        async with (
            running_optoro(client_id=OPTORO_CLIENT[0], client_secret=OPTORO_CLIENT[1]) as optoro,
            running_kibo(token=KIBO_TOKEN) as kibo,
            # windows far above the daemon's configured rate: its governor reads the
            # X-RateLimit-* headers, which then leave it room
            running_returnlogic(rate_limit_second=5000, rate_limit_minute=300_000) as returnlogic,
        ):
            for seed_number, info in enumerate(RETAILERS.values()):
                team = info["team"]
                returnlogic.generate(orders=5, products=8, seed=seed_number, team_id=team)
                self.skus[team] = sorted(
                    variant["sku"]
                    for product in returnlogic.team(team).products.values()
                    for variant in product["variants"]
                    if variant.get("sku")
                )
            self.urls = {
                "optoro": optoro.url,
                "kibo": kibo.url,
                "returnlogic": returnlogic.url,
                "acme_rl_key": returnlogic.issue_api_key(RETAILERS["acme"]["team"]),
                "beta_rl_key": returnlogic.issue_api_key(RETAILERS["beta"]["team"]),
            }
            self.ready.set()
            await self.stopping.wait()

    def __enter__(self) -> Sandboxes:
        self.thread.start()
        if not self.ready.wait(30) or self.error is not None:
            raise AssertionError(f"sandboxes did not start: {self.error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.stopping is not None:
            self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(30)


def retailer_toml(retailer: str, urls: dict[str, str]) -> str:
    optoro_auth, kibo_auth = (
        ('kind = "basic"\nusername = "optoro"\npassword = "${FUZZ_ACME_HOOK_PASSWORD}"'),
        ('kind = "api_key"\nheader = "X-Kibo-Secret"\nkey = "${FUZZ_ACME_KIBO_NOTIFY}"'),
    )
    if retailer == "beta":
        optoro_auth, kibo_auth = (
            'kind = "api_key"\nheader = "X-Api-Key"\nkey = "${FUZZ_BETA_OPTORO_KEY}"',
            'kind = "basic"\nusername = "kibo"\npassword = "${FUZZ_BETA_KIBO_PASSWORD}"',
        )
    info = RETAILERS[retailer]
    return f"""
[retailers.{retailer}]
routes = {{ catalog = "returnlogic", exchange_order_sink = "returnlogic" }}
[retailers.{retailer}.policy]
reconcile_every = 3600.0
[retailers.{retailer}.optoro]
base_url = "{urls["optoro"]}"
client_id = "{OPTORO_CLIENT[0]}"
client_secret = "${{FUZZ_OPTORO_SECRET}}"
optiturn_id = "{info["optiturn"]}"
timeout = 5.0
exchange_wait = 5.0
[retailers.{retailer}.optoro.inbound_auth]
{optoro_auth}
[retailers.{retailer}.returnlogic]
base_url = "{urls["returnlogic"]}"
team_id = "{info["team"]}"
static_token = "{urls[f"{retailer}_rl_key"]}"
requests_per_second = 1000
requests_per_minute = 60000
timeout = 5.0
[retailers.{retailer}.returnlogic.orders]
enabled = false
[retailers.{retailer}.returnlogic.rmas]
enabled = true
webhook_secret = "${{FUZZ_RL_HOOK}}"
reconcile_every = 3600.0
[retailers.{retailer}.kibo]
base_url = "{urls["kibo"]}"
token = "${{FUZZ_KIBO_TOKEN}}"
timeout = 5.0
line_ids = "numeric"
unknown_outcome_wait = 5.0
[retailers.{retailer}.kibo.notifications]
{kibo_auth}
"""


def write_config(folder: Path, urls: dict[str, str]) -> Path:
    path = folder / "bridge.toml"
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 0\nmax_body_bytes = {MAX_BODY}\n'
        f'[store]\nurl = "sqlite:///{folder / "bridge.db"}"\n'
        + "".join(retailer_toml(r, urls) for r in RETAILERS)
    )
    return path


class Daemon:
    """``python -m bridge run`` on the config; its log (stderr) goes to a file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self.starts = 0
        self._log_offset = 0

    def start(self) -> None:
        self.starts += 1
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bridge", "run", "--config", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=REPO,
                env={**os.environ, **SECRETS},
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode(errors="replace")
        if "listening on" not in line:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"daemon did not start: {line!r}\n{self.log_tail()}")
        parts = urlsplit(line.strip().rsplit(" ", 1)[1])
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, sig: int = signal.SIGTERM, wait: float = 20.0) -> int | None:
        """Signal the daemon (only if it is still running) and reap it; its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code

    def log_tail(self, chars: int = 4000) -> str:
        if not self.log.exists():
            return ""
        with self.log.open("rb") as fh:
            fh.seek(self._log_offset)
            return fh.read().decode(errors="replace")[-chars:]

    def traceback_head(self) -> str:
        """The first lines of the last traceback (or critical line) this run logged."""
        text = self.log_tail(200_000)
        heads = []
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                if line.startswith(("Traceback", "  File", "    ")) or "Error" in line:
                    heads.append(line)
                continue
            if entry.get("level") in ("ERROR", "CRITICAL") or "exc_info" in entry:
                heads.append(json.dumps(entry)[:1500])
        return "\n".join(heads[-12:])[-3000:]


class Client:
    """One keep-alive HTTP/1.1 connection to the daemon; raw bytes in headers allowed."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def send(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, bytes]] = (),  # type: ignore[assignment]
        body: bytes | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(
                    self.daemon.host, self.daemon.port, timeout=30
                )
            try:
                self.conn.putrequest(method, target, skip_accept_encoding=True)
                for name, value in headers:
                    self.conn.putheader(name, value)
                if body is not None:
                    self.conn.putheader("Content-Length", str(len(body)))
                self.conn.endheaders(body)
                resp = self.conn.getresponse()
                data = resp.read()
                answer = {k.lower(): v for k, v in resp.getheaders()}
                if resp.will_close:
                    self.close()
                return resp.status, answer, data
            except (ConnectionError, http.client.HTTPException, OSError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


# --- requests ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One request. ``headers``: header parameter -> raw value, ``None`` = left out (parameters
    not named get the right value); ``path``: path parameter -> percent-encoded text;
    ``query``: the query string (without the credentials' key); ``auth``: ``valid``, ``none``,
    ``wrong`` or ``malformed:<n>``."""

    label: str
    auth: str = "valid"
    headers: tuple[tuple[str, bytes | None], ...] = ()
    noise: tuple[tuple[str, bytes], ...] = ()
    """Further headers sent as they are (hostile names and values)."""
    path: tuple[tuple[str, str], ...] = ()
    query: str = ""
    body: bytes | None = None


MALFORMED_BASIC: list[bytes] = [
    "Basic é".encode(),
    b"Basic \xff\xfe\xfd",
    b"Basic !!!not-base64!!!",
    b"Basic " + base64.b64encode(b"no-colon-here"),
    b"Basic " + base64.b64encode(b"\xff\xfe:\xff"),
    b"Basic " + base64.b64encode("optoro:é".encode()),
    b"Basic",
    b"Basic " + b"A" * 6000,
    b"Bearer " + b"x" * 40,
    "Basic ²".encode(),
]
MALFORMED_KEY: list[bytes] = [
    b"\xff",
    "é".encode(),
    b"",
    b"\x80\x81 \xfe",
    b"k" * 6000,
    "²".encode(),
]
MALFORMED_QUERY: list[str] = ["key=%ff", "key=", "key=%ed%a0%80", "key", "key=" + "k" * 3000]


def credentials_for(retailer: str, platform: str) -> tuple[str, ...] | None:
    return CREDENTIALS.get((retailer, platform))


@dataclass
class Op:
    """One operation of the served document, with what the test knows about its caller."""

    method: str
    path: str
    spec: dict[str, Any]
    components: dict[str, Any]
    cases: int
    retailer: str | None = None
    platform: str | None = None
    skus: list[str] = field(default_factory=list)
    """SKUs the retailer's catalog holds."""

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def body_schema(self) -> dict[str, Any] | None:
        body = self.spec.get("requestBody")
        if body is None:
            return None
        schema: dict[str, Any] = body["content"]["application/json"]["schema"]
        return inline(schema, self.components)

    def parameters(self, where: str) -> list[dict[str, Any]]:
        return [p for p in self.spec.get("parameters", []) if p["in"] == where]

    @property
    def secured(self) -> bool:
        return bool(self.spec.get("security"))

    @property
    def credentials(self) -> tuple[str, ...] | None:
        if not self.secured or self.retailer is None or self.platform is None:
            return None
        return credentials_for(self.retailer, self.platform)

    def right_value(self, header: str) -> bytes | None:
        if header == "X-Optiturn-Id" and self.retailer is not None:
            return RETAILERS[self.retailer]["optiturn"].encode()
        if header == "X-Optiturn-Api-Version":
            return b"2"
        return None


def inline(schema: Any, components: dict[str, Any], depth: int = 0) -> Any:
    """``schema`` with every ``#/components/schemas/X`` reference replaced by X (the models have
    no recursive references; a depth guard says so if one appears)."""
    assert depth < 50, "recursive schema reference"
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            target = components["schemas"][ref.rsplit("/", 1)[1]]
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            return inline({**target, **rest}, components, depth + 1)
        return {k: inline(v, components, depth + 1) for k, v in schema.items()}
    if isinstance(schema, list):
        return [inline(v, components, depth + 1) for v in schema]
    return schema


def strict_json(body: bytes) -> Any:
    """``body`` as JSON the way every limit the design names agrees: UTF-8, no lone surrogate,
    integers Python reads (< 4301 digits), nesting Python reads; ``ValueError`` (or
    ``RecursionError``) otherwise. Duplicate keys (last wins here) and NaN/Infinity are left to
    the daemon's documented choice: refusing them is fine (then they must be quarantined), and
    so is reading them, as long as the result fits the schema."""
    value = json.loads(body.decode("utf-8"))

    def walk(v: Any) -> None:
        if isinstance(v, str):
            v.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError (a ValueError)
        elif isinstance(v, dict):
            for k, item in v.items():
                k.encode("utf-8")
                walk(item)
        elif isinstance(v, list):
            for item in v:
                walk(item)

    walk(value)
    return value


def conforms(value: Any, schema: dict[str, Any]) -> bool:
    try:
        validator = jsonschema.Draft202012Validator(
            schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
        return validator.is_valid(value)
    except RecursionError:
        return False


def body_conforms(body: bytes | None, schema: dict[str, Any] | None) -> bool:
    if schema is None:
        return True
    if body is None:
        return False
    try:
        value = strict_json(body)
    except (ValueError, RecursionError):
        return False
    return conforms(value, schema)


def header_conforms(op: Op, case: Case) -> bool:
    given = dict(case.headers)
    for param in op.parameters("header"):
        name = param["name"]
        raw = given[name] if name in given else op.right_value(name)
        if raw is None:
            if param.get("required"):
                return False
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return False
        if not conforms(text, param["schema"]):
            return False
    return True


def build_request(op: Op, case: Case) -> tuple[str, list[tuple[str, bytes]]]:
    path = op.path
    given_path = dict(case.path)
    for param in op.parameters("path"):
        path = path.replace("{" + param["name"] + "}", given_path.get(param["name"], "x"))
    query = case.query
    headers: list[tuple[str, bytes]] = []
    given = dict(case.headers)
    for param in op.parameters("header"):
        name = param["name"]
        value = given[name] if name in given else op.right_value(name)
        if value is not None:
            headers.append((name, value))
    creds = op.credentials
    if creds is not None:
        kind = creds[0]
        mode, _, index = case.auth.partition(":")
        if kind == "basic":
            good = b"Basic " + base64.b64encode(f"{creds[1]}:{creds[2]}".encode())
            wrong = b"Basic " + base64.b64encode(f"{creds[1]}:not-the-password".encode())
            bad = MALFORMED_BASIC[int(index or 0) % len(MALFORMED_BASIC)]
            value = {"valid": good, "wrong": wrong, "malformed": bad}.get(mode)
            if value is not None:
                headers.append(("Authorization", value))
        elif kind == "header":
            bad = MALFORMED_KEY[int(index or 0) % len(MALFORMED_KEY)]
            value = {"valid": creds[2].encode(), "wrong": b"not-the-key", "malformed": bad}.get(
                mode
            )
            if value is not None:
                headers.append((creds[1], value))
        else:
            bad_query = MALFORMED_QUERY[int(index or 0) % len(MALFORMED_QUERY)]
            extra = {
                "valid": f"{creds[1]}={quote(creds[2], safe='')}",
                "wrong": f"{creds[1]}=not-the-key",
                "malformed": bad_query,
            }.get(mode)
            if extra:
                query = f"{query}&{extra}" if query else extra
    if case.body is not None:
        headers.append(("Content-Type", b"application/json"))
    headers.extend(case.noise)
    return path + (f"?{query}" if query else ""), headers


# --- strategies from the document ----------------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
ANY_JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
HOSTILE_TEXT = [
    "\ud800",
    "\udfff",
    "é",
    "²",
    "٢",
    "\x00",
    "a" * 5000,
    "../../etc/passwd",
    "%ff",
    "💥",
    " ",
    "",
]
HOSTILE_HEADER = [
    "²".encode(),
    "٢".encode(),
    b"\xff",
    b"\x80abc",
    "é".encode(),
    b"",
    b"3",
    b"0",
    b"01",
    b"-1",
    b"2.0",
    b" 2",
    b"9" * 5000,
    b"\x0f",
    b"a\x00b",
    b"\x7f",
]
HOSTILE_PATH = [
    "%ff",
    "%ed%a0%80",
    "%00",
    "a%00b",
    "%2e%2e",
    "%2F",
    "%F0%9F%98%80",
    "%20",
    "x" * 4000,
    "%25",
    "123",
    "Mouse",
]


IGNORED_KEYWORDS = frozenset({"title", "description", "default", "examples"})
OFFSETS = [UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=5, minutes=30))]


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid for ``schema``: the JSON Schema subset pydantic writes (an unknown keyword
    fails loudly rather than being ignored, so no constraint of the document is missed)."""
    unknown = set(schema) - IGNORED_KEYWORDS - {
        "type", "properties", "required", "additionalProperties", "items", "minItems",
        "maxItems", "anyOf", "enum", "const", "minLength", "maxLength", "pattern", "minimum",
        "maximum", "exclusiveMinimum", "exclusiveMaximum", "format",
    }  # fmt: skip
    assert not unknown, f"schema keywords the generator does not know: {sorted(unknown)}"
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        rest = {k: v for k, v in schema.items() if k != "anyOf" and k not in IGNORED_KEYWORDS}
        return st.one_of([from_schema({**rest, **option}) for option in schema["anyOf"]])
    kind = schema.get("type")
    if kind is None:
        return ANY_JSON
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": k}) for k in kind])
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        low = schema.get("minimum", schema.get("exclusiveMinimum", -(10**12) - 1) + 1)
        high = schema.get("maximum", schema.get("exclusiveMaximum", 10**12 + 1) - 1)
        return st.integers(min_value=low, max_value=high)
    if kind == "number":
        return st.floats(
            min_value=schema.get("minimum"),
            max_value=schema.get("maximum"),
            allow_nan=False,
            allow_infinity=False,
        )
    if kind == "string":
        return string_from_schema(schema)
    if kind == "array":
        items = from_schema(schema.get("items", {}))
        low = schema.get("minItems", 0)
        return st.lists(items, min_size=low, max_size=max(schema.get("maxItems", 3), low))
    assert kind == "object", kind
    return object_from_schema(schema)


def string_from_schema(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    low, high = (
        schema.get("minLength", 0),
        schema.get("maxLength", max(schema.get("minLength", 0), 24)),
    )
    if schema.get("format") == "date-time":
        return st.datetimes(timezones=st.sampled_from(OFFSETS)).map(lambda d: d.isoformat())
    if "pattern" in schema:
        return st.from_regex(schema["pattern"], fullmatch=True).filter(
            lambda s: low <= len(s) <= high
        )
    return st.text(min_size=low, max_size=high)


def object_from_schema(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    properties: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", ()))
    extra = schema.get("additionalProperties", True)
    fields = {
        name: from_schema(prop)
        if name in required
        else st.one_of(st.just(ABSENT), from_schema(prop))
        for name, prop in properties.items()
    }
    extras: st.SearchStrategy[dict[str, Any]] = (
        st.dictionaries(
            st.text(max_size=10).filter(lambda k: k not in properties), ANY_JSON, max_size=2
        )
        if extra is not False
        else st.just({})
    )

    def assemble(parts: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
        drawn, more = parts
        return {**more, **{k: v for k, v in drawn.items() if v is not ABSENT}}

    return st.tuples(st.fixed_dictionaries(fields), extras).map(assemble)


ABSENT = object()
"""An optional property left out."""


def encode_json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def mutate(value: Any, choice: int, replacement: Any) -> Any:
    """``value`` with one thing broken: a key dropped, a value replaced, or the shape changed."""
    if isinstance(value, dict) and value:
        keys = sorted(value)
        key = keys[choice % len(keys)]
        action = (choice // len(keys)) % 3
        if action == 0:
            return {k: v for k, v in value.items() if k != key}
        if action == 1:
            return {**value, key: replacement}
        inner = value[key]
        if isinstance(inner, dict | list) and inner:
            return {**value, key: mutate_inner(inner, choice // 3, replacement)}
        return {**value, key: [inner]}
    return [value]


def mutate_inner(value: Any, choice: int, replacement: Any) -> Any:
    if isinstance(value, list):
        index = choice % len(value)
        return [mutate(v, choice, replacement) if i == index else v for i, v in enumerate(value)]
    return mutate(value, choice, replacement)


def text_param(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    return from_schema(schema) if schema.get("type") == "string" else st.text(max_size=20)


FIELD_TEXT = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"))
"""What HTTP allows in a header value (visible ASCII, space, obs-text as UTF-8): control
characters are left to the corpus, since the HTTP parser itself refuses them."""


def header_text(schema: dict[str, Any]) -> st.SearchStrategy[bytes]:
    low = schema.get("minLength", 0)
    text = (
        st.sampled_from(schema["enum"])
        if "enum" in schema
        else st.text(FIELD_TEXT, min_size=low, max_size=max(low, 24))
    )
    return text.map(lambda s: s.strip().encode())


NOISE_NAMES = [
    "Authorization",
    "X-Api-Key",
    "X-Kibo-Secret",
    "X-Optiturn-Id",
    "X-Optiturn-Api-Version",
    "Cookie",
    "X-Forwarded-For",
]
NOISE = st.lists(
    st.tuples(
        st.sampled_from(NOISE_NAMES),
        st.one_of(header_text({}), st.sampled_from(HOSTILE_HEADER)),
    ),
    max_size=2,
).map(tuple)


def header_value(op: Op, param: dict[str, Any]) -> st.SearchStrategy[bytes | None]:
    right = op.right_value(param["name"])
    generated = header_text(param["schema"])
    options: list[st.SearchStrategy[bytes | None]] = [
        generated,
        st.sampled_from(HOSTILE_HEADER),
        st.none(),
    ]
    if right is not None:
        options = [st.just(right), st.just(right), st.just(right), *options]
    return st.one_of(options)


def path_value(param: dict[str, Any], known: list[str]) -> st.SearchStrategy[str]:
    generated = (
        text_param(param["schema"])
        .filter(bool)
        .map(lambda s: quote(s.encode("utf-8", "surrogatepass"), safe=""))
    )
    options = [generated, generated, st.sampled_from(HOSTILE_PATH)]
    if known:
        options.append(st.sampled_from([quote(k, safe="") for k in known]))
    return st.one_of(options)


def query_strategy(op: Op) -> st.SearchStrategy[str]:
    params = op.parameters("query")
    if not params:
        return st.just("")
    team = RETAILERS[op.retailer]["team"] if op.retailer else ""

    def one(param: dict[str, Any]) -> st.SearchStrategy[str | None]:
        values: list[st.SearchStrategy[str | None]] = [
            text_param(param["schema"]),
            st.sampled_from(HOSTILE_TEXT),
            st.none(),
        ]
        if param["name"] == "teamId":
            values = [st.just(team), st.just(team), *values]
        return st.one_of(values)

    def encode(pairs: list[tuple[str, str | None]]) -> str:
        return "&".join(
            f"{quote(name)}={quote(value.encode('utf-8', 'surrogatepass'), safe='')}"
            for name, value in pairs
            if value is not None
        )

    return st.tuples(*(st.tuples(st.just(p["name"]), one(p)) for p in params)).map(
        lambda pairs: encode(list(pairs))
    )


def body_strategy(op: Op) -> st.SearchStrategy[bytes | None]:
    schema = op.body_schema
    if schema is None:
        return st.none()
    valid = from_schema(schema)
    mutant = st.tuples(valid, st.integers(0, 10_000), ANY_JSON).map(lambda t: mutate(*t))
    return st.one_of(
        valid.map(encode_json),
        valid.map(encode_json),
        mutant.map(encode_json),
        mutant.map(encode_json),
        ANY_JSON.map(encode_json),
        st.binary(max_size=64),
    )


def auth_strategy(op: Op) -> st.SearchStrategy[str]:
    if op.credentials is None:
        return st.just("valid")
    return st.one_of(
        st.just("valid"),
        st.just("valid"),
        st.just("valid"),
        st.sampled_from(["none", "wrong"]),
        st.integers(0, 50).map(lambda i: f"malformed:{i}"),
    )


def case_strategy(op: Op) -> st.SearchStrategy[Case]:
    headers = st.tuples(
        *(st.tuples(st.just(p["name"]), header_value(op, p)) for p in op.parameters("header"))
    )
    paths = st.tuples(
        *(st.tuples(st.just(p["name"]), path_value(p, op.skus)) for p in op.parameters("path"))
    )
    return st.builds(
        Case,
        label=st.just("generated"),
        auth=auth_strategy(op),
        headers=headers,
        noise=st.one_of(st.just(()), NOISE),
        path=paths,
        query=query_strategy(op),
        body=body_strategy(op),
    )


# --- the corpus: issue 9's table and the guide's samples -----------------------------------------


def nested(depth: int, kind: str = "list") -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


BIG_INT = "1" * 4301


def guide_bodies(path: str) -> list[Any]:
    bodies = []
    for step in sorted((FIXTURES / "optoro-scenarios").glob("*/*.json")):
        data = json.loads(step.read_text())
        if isinstance(data, dict) and data.get("path") == path and data.get("request"):
            bodies.append(data["request"])
    return bodies


def generic_corpus() -> list[Case]:
    """Bodies every body endpoint gets (authenticated, and a few not)."""
    cases = [
        Case("nesting 1000 (arrays)", body=nested(1000)),
        Case("nesting 1000 (objects)", body=nested(1000, "object")),
        Case("nesting 5000 (arrays)", body=nested(5000)),
        Case("nesting 100000 (arrays)", body=b"[" * 60000),
        Case("4301-digit integer", body=f'{{"x": {BIG_INT}}}'.encode()),
        Case("4301-digit integer alone", body=BIG_INT.encode()),
        Case("lone surrogate key", body=b'{"\\ud800": 1}'),
        Case("NaN", body=b'{"x": NaN}'),
        Case("Infinity", body=b"[Infinity, -Infinity]"),
        Case("duplicate keys", body=b'{"a": 1, "a": 2}'),
        Case("empty body", body=b""),
        Case("null", body=b"null"),
        Case("array", body=b"[]"),
        Case("string", body=b'"x"'),
        Case("invalid utf-8", body=b"\xff\xfe{}"),
        Case("utf-16 bom", body='{"a": 1}'.encode("utf-16")),
        Case("truncated", body=b'{"a": '),
        Case("body over the limit", body=b'{"a": "' + b"x" * (MAX_BODY + 10) + b'"}'),
        Case("nesting 1000, unauthenticated", auth="none", body=nested(1000)),
        Case("Basic é, nested", auth="malformed:0", body=nested(1000)),
    ]
    cases += [
        Case(f"malformed credentials {i}", auth=f"malformed:{i}", body=b"{}") for i in range(10)
    ]
    return cases


def rma_corpus() -> list[Case]:
    bad = {"rma_identifier": "BAD1", "status": "NOT_A_STATUS"}
    guide = guide_bodies("/rmas")
    sample = guide[0]
    item = sample["items"][0]
    cases = [Case("invalid RMA status (issue 9)", body=encode_json(bad))]
    cases += [Case(f"guide RMA {i}", body=encode_json(b)) for i, b in enumerate(guide)]
    negative = {
        **sample,
        "items": [
            {
                **item,
                "refund_financials": {
                    **item["refund_financials"],
                    "shopper_refund_amount_cents": -500,
                },
            }
        ],
    }
    cases += [
        Case("negative shopper share", body=encode_json({**negative, "rma_identifier": "NEG1"})),
        Case(
            "lone surrogate rma_identifier",
            body=b'{"rma_identifier": "\\ud800", "status": "CREATED"}',
        ),
        Case(
            "4301-digit cents",
            body=json.dumps({**sample, "rma_identifier": "BIG1"})
            .replace('"return_shipping_cost_cents": 0', f'"return_shipping_cost_cents": {BIG_INT}')
            .encode(),
        ),
        Case(
            "NaN cents",
            body=encode_json(sample).replace(
                b'"gift_refund_only": false',
                b'"gift_refund_only": false, "return_shipping_cost_cents": NaN',
            ),
        ),
        Case(
            "wrong X-Optiturn-Id",
            headers=(("X-Optiturn-Id", b"someone-else"),),
            body=encode_json(sample),
        ),
        Case("missing X-Optiturn-Id", headers=(("X-Optiturn-Id", None),), body=encode_json(sample)),
        Case(
            "non-ASCII X-Optiturn-Id",
            headers=(("X-Optiturn-Id", "é".encode()),),
            body=encode_json(sample),
        ),
        Case(
            "raw-byte X-Optiturn-Id",
            headers=(("X-Optiturn-Id", b"\xff"),),
            body=encode_json(sample),
        ),
        Case(
            "unauthenticated guide RMA",
            auth="none",
            body=encode_json({**sample, "rma_identifier": "UNAUTH1"}),
        ),
        Case(
            "wrong password guide RMA",
            auth="wrong",
            body=encode_json({**sample, "rma_identifier": "UNAUTH2"}),
        ),
    ]
    return cases + generic_corpus()


def exchange_corpus(skus: list[str]) -> list[Case]:
    guide = guide_bodies("/orders")
    sample = guide[0] if guide else {"original_order_id": "X"}
    cases = [Case(f"guide exchange order {i}", body=encode_json(b)) for i, b in enumerate(guide)]
    for i, order in enumerate(guide[: len(skus)]):
        placeable = {
            **order,
            "original_order_id": f"FUZZ-{i}",
            "items": [{**item, "sku": skus[i]} for item in order["items"]],
        }
        cases += [
            Case(f"guide exchange order {i}, catalog SKU", body=encode_json(placeable)),
            Case(f"guide exchange order {i}, catalog SKU, again", body=encode_json(placeable)),
            Case(
                f"guide exchange order {i}, catalog SKU, another body",
                body=encode_json({**placeable, "note": "another body"}),
            ),
        ]
    for value in ("²".encode(), "٢".encode(), b"3", b"", b"\xff", b"9" * 5000, b"0"):
        cases.append(
            Case(
                f"X-Optiturn-Api-Version {value[:12]!r}",
                headers=(("X-Optiturn-Api-Version", value),),
                body=encode_json({**sample, "original_order_id": f"V-{value[:8].hex()}"}),
            )
        )
    cases += [
        Case(
            "unauthenticated, version ²",
            auth="none",
            headers=(("X-Optiturn-Api-Version", "²".encode()),),
            body=encode_json(sample),
        ),
        Case(
            "lone surrogate original_order_id",
            body=b'{"original_order_id": "\\ud800", "currency": "USD"}',
        ),
        Case(
            "4301-digit quantity",
            body=json.dumps(sample).replace('"quantity": 1', f'"quantity": {BIG_INT}', 1).encode(),
        ),
        Case(
            "wrong X-Optiturn-Id",
            headers=(("X-Optiturn-Id", b"someone-else"),),
            body=encode_json(sample),
        ),
        Case(
            "reused original_order_id, other body",
            body=encode_json({**sample, "note": "another body"}),
        ),
    ]
    return cases + generic_corpus()


def kibo_corpus() -> list[Case]:
    created = {
        "eventTypeID": "return_created",
        "returnID": 12,
        "orderID": 3,
        "externalOrderID": "ORD1",
    }
    return [
        Case("return_created", body=encode_json(created)),
        Case(
            "lone surrogate externalOrderID",
            body=b'{"eventTypeID": "return_created", "returnID": 1, "externalOrderID": "\\ud800"}',
        ),
        Case("lone surrogate event type", body=b'{"eventTypeID": "\\udfff", "returnID": 1}'),
        Case(
            "4301-digit returnID",
            body=f'{{"eventTypeID": "return_cleared", "returnID": {BIG_INT}}}'.encode(),
        ),
        Case(
            "4301-digit string returnID",
            body=f'{{"eventTypeID": "return_cleared", "returnID": "{BIG_INT}"}}'.encode(),
        ),
        Case("NaN returnID", body=b'{"eventTypeID": "return_cleared", "returnID": NaN}'),
        Case("Infinity returnID", body=b'{"eventTypeID": "return_cleared", "returnID": Infinity}'),
        Case("float returnID", body=b'{"eventTypeID": "return_cleared", "returnID": 1e400}'),
        Case(
            "duplicate returnID",
            body=b'{"eventTypeID": "return_cleared", "returnID": 1, "returnID": 2}',
        ),
        Case("nested event", body=b'{"data": {"eventType": "return_rejected", "return_id": "77"}}'),
        Case("X-Kibo-Secret 0xff", auth="malformed:0", body=encode_json(created)),
        *generic_corpus(),
    ]


def rl_webhook_corpus() -> list[Case]:
    good = {
        "eventId": "e-1",
        "resourceAction": "rma.updated",
        "rlRmaId": 7,
        "createDate": "2024-10-02T17:56:38.921Z",
    }
    return [
        Case("rma.updated", body=encode_json(good)),
        Case(
            "lone surrogate eventId (issue 9)",
            body=b'{"eventId": "\\ud800", "resourceAction": "rma.updated", "rlRmaId": 7}',
        ),
        Case(
            "4301-digit rlRmaId (issue 9)",
            body=b'{"eventId": "e-2", "resourceAction": "rma.updated", "rlRmaId": '
            + BIG_INT.encode()
            + b"}",
        ),
        Case(
            "4301-digit string rlRmaId",
            body=b'{"eventId": "e-3", "resourceAction": "rma.updated", "rlRmaId": "'
            + BIG_INT.encode()
            + b'"}',
        ),
        Case(
            "NaN rlRmaId",
            body=b'{"eventId": "e-4", "resourceAction": "rma.updated", "rlRmaId": NaN}',
        ),
        Case(
            "duplicate eventId",
            body=b'{"eventId": "a", "eventId": "b", "resourceAction": "rma.updated", "rlRmaId": 7}',
        ),
        Case(
            "non-ASCII digits rlRmaId",
            body='{"eventId": "e-5", "resourceAction": "rma.updated", "rlRmaId": "٣"}'.encode(),
        ),
        Case(
            "boolean rlRmaId",
            body=b'{"eventId": "e-6", "resourceAction": "rma.updated", "rlRmaId": true}',
        ),
        Case("unauthenticated", auth="none", body=encode_json(good)),
        Case("malformed key", auth="malformed:0", body=encode_json(good)),
        *generic_corpus(),
    ]


def callback_corpus(team: str) -> list[Case]:
    return [
        Case(
            "another team's code for this team (issue 9)",
            query=f"code=code-of-another-team&teamId={team}",
        ),
        Case("junk code, this team", query=f"code=%ff%fe&teamId={team}"),
        Case("no code", query=f"teamId={team}"),
        Case("no teamId", query="code=abc"),
        Case("lone surrogate code", query=f"code=%ed%a0%80&teamId={team}"),
        Case("other team", query="code=abc&teamId=someone-else"),
        Case("repeated parameters", query=f"code=a&code=b&teamId={team}&teamId=x"),
        Case("long code", query=f"code={'c' * 6000}&teamId={team}"),
        Case("no query"),
    ]


def variants_corpus(skus: list[str]) -> list[Case]:
    cases = [
        Case(f"variant {raw[:20]!r}", path=(("variant_identifier", raw),)) for raw in HOSTILE_PATH
    ]
    cases += [
        Case(f"catalog SKU {sku}", path=(("variant_identifier", quote(sku)),)) for sku in skus[:4]
    ]
    cases += [
        Case("guide sku", path=(("variant_identifier", "96027"),)),
        Case(
            "non-ASCII X-Optiturn-Id",
            headers=(("X-Optiturn-Id", "é".encode()),),
            path=(("variant_identifier", "Mouse"),),
        ),
        Case(
            "raw-byte X-Optiturn-Id",
            headers=(("X-Optiturn-Id", b"\xff"),),
            path=(("variant_identifier", "Mouse"),),
        ),
        Case(
            "missing X-Optiturn-Id",
            headers=(("X-Optiturn-Id", None),),
            path=(("variant_identifier", "Mouse"),),
        ),
        Case("Basic é", auth="malformed:0", path=(("variant_identifier", "Mouse"),)),
    ]
    return cases


def corpus_for(op: Op) -> list[Case]:
    path = op.path
    if path.endswith("/optoro/rmas"):
        return rma_corpus()
    if path.endswith(("/optoro/exchange_orders", "/optoro/orders")):
        return exchange_corpus(op.skus)
    if path.endswith("/kibo/notifications"):
        return kibo_corpus()
    if path.endswith("/returnlogic/webhooks"):
        return rl_webhook_corpus()
    if path.endswith("/oauth/callback"):
        return callback_corpus(RETAILERS[op.retailer or "acme"]["team"])
    if "{variant_identifier}" in path:
        return variants_corpus(op.skus)
    return [Case("Basic é on a daemon route", auth="malformed:0")]


# --- the run -----------------------------------------------------------------------------------


@dataclass
class Problem:
    operation: str
    kind: str
    case: str
    status: int | None
    detail: str

    def line(self) -> str:
        return f"{self.operation} [{self.kind}] {self.case} -> {self.status}: {self.detail}"


def describe(case: Case) -> str:
    body = case.body
    shown = (
        "none"
        if body is None
        else repr(body[:160]) + (f"... ({len(body)} bytes)" if len(body) > 160 else "")
    )
    headers = [(k, v[:40] if v else v) for k, v in case.headers]
    return (
        f"{case.label}; auth={case.auth}; headers={headers};"
        f" path={[(k, v[:60]) for k, v in case.path]}; query={case.query[:120]!r}; body={shown}"
    )


@dataclass
class Tally:
    cases: int = 0
    seconds: float = 0.0
    authenticated: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    quarantined: int = 0
    accepted: int = 0
    server_errors: int = 0
    exits: int = 0
    deferred: int = 0
    """503 with Retry-After (back-pressure or a partner unavailable)."""
    parser_refusals: int = 0
    """400s of the HTTP parser itself (text, not JSON): messages HTTP forbids."""


class Fuzz:
    """Sends cases and checks every outcome; keeps the figures and the problems."""

    def __init__(self, daemon: Daemon, db: Path, report: Path) -> None:
        self.daemon = daemon
        self.client = Client(daemon)
        self.health = Client(daemon)
        self.db = sqlite3.connect(db, timeout=10, isolation_level=None)
        self.report = report
        self.problems: list[Problem] = []
        self.tallies: dict[str, Tally] = defaultdict(Tally)
        self.told: set[int] = set()
        """Inbox ids the daemon named to an authenticated sender."""
        self.aborted: str | None = None

    def close(self) -> None:
        self.client.close()
        self.health.close()
        self.db.close()

    def problem(self, op: Op, kind: str, case: Case, status: int | None, detail: str) -> None:
        self.problems.append(Problem(op.name, kind, describe(case), status, detail[:3000]))

    def inbox_rows(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM inbox").fetchone()[0])

    def inbox_row(self, inbox_id: int) -> tuple[str, str | None] | None:
        row = self.db.execute("SELECT status, note FROM inbox WHERE id = ?", (inbox_id,)).fetchone()
        return None if row is None else (str(row[0]), row[1])

    def run(self, op: Op, case: Case) -> None:
        if self.aborted:
            return
        tally = self.tallies[op.name]
        tally.cases += 1
        target, headers = build_request(op, case)
        authenticated = op.credentials is None or case.auth == "valid"
        tally.authenticated += authenticated and op.credentials is not None
        rows_before = self.inbox_rows() if not authenticated else 0
        failure = ""
        try:
            status, answer_headers, data = self.client.send(op.method, target, headers, case.body)
        except (ConnectionError, http.client.HTTPException, OSError) as exc:
            status, answer_headers, data = None, {}, b""
            failure = f"{type(exc).__name__}: {exc}"
        if status is not None:
            tally.statuses[status] += 1
        if not self.daemon_ok(op, case, status):
            tally.exits += 1
            return
        if status is None:
            self.problem(op, "no answer", case, None, failure)
            return
        if deferred(status, answer_headers):
            tally.deferred += 1
        elif status >= 500:
            tally.server_errors += 1
            self.problem(op, "5xx", case, status, data[:600].decode(errors="replace"))
        answer = self.json_answer(op, case, status, answer_headers, data)
        if answer is None and data.strip() != b"null":
            return  # recorded: an answer that is not JSON says nothing more
        if not authenticated:
            self.check_refused(op, case, status, answer, rows_before)
            return
        self.check_authenticated(op, case, status, answer, tally)

    def healthy(self) -> bool:
        if not self.daemon.alive():
            return False
        try:
            return self.health.send("GET", "/healthz")[0] == 200
        except (ConnectionError, http.client.HTTPException, OSError):
            return False

    def daemon_ok(self, op: Op, case: Case, status: int | None) -> bool:
        """The daemon is alive and /healthz says 200; a dead one is recorded and started again
        (``False``)."""
        if self.healthy():
            return True
        wait_until(lambda: not self.daemon.alive() or self.healthy(), 10)
        if self.daemon.alive():
            if not self.healthy():
                self.problem(op, "healthz", case, status, "/healthz does not answer 200")
            return True
        code = self.daemon.returncode()
        self.problem(
            op, "daemon exited", case, status, f"exit code {code}\n{self.daemon.traceback_head()}"
        )
        self.recover(op, case)
        return False

    def restart(self) -> bool:
        """Start the daemon again; ``True`` when it gets ready and works off its inbox without
        exiting (``False``: it exits again, a crash loop)."""
        self.client.close()
        self.health.close()
        self.daemon.stop(signal.SIGKILL, wait=10)
        self.daemon.start()

        def settled() -> bool:
            return not self.daemon.alive() or (self.ready() and self.pending() == 0)

        wait_until(settled, 20)
        return self.daemon.alive()

    def recover(self, op: Op, case: Case) -> None:
        """After an exit: restart; on a crash loop, do what an operator would (mark the pending
        inbox items quarantined in the SQLite file, recorded as a problem) and try once more."""
        try:
            if self.restart():
                return
            self.problem(
                op,
                "crash loop",
                case,
                None,
                f"exits again after a restart (code {self.daemon.returncode()}):"
                f"\n{self.daemon.traceback_head()}",
            )
            self.daemon.stop(signal.SIGKILL, wait=10)
            ids = [
                int(r[0]) for r in self.db.execute("SELECT id FROM inbox WHERE status = 'pending'")
            ]
            self.db.execute(
                "UPDATE inbox SET status = 'quarantined', note = 'fuzz test: crash loop',"
                " lease_owner = NULL, lease_until = NULL WHERE status = 'pending'"
            )
            self.problem(op, "SQLite edited to end a crash loop", case, None, f"inbox ids {ids}")
            if not self.restart():
                self.aborted = (
                    f"crash loop even with no pending item:\n{self.daemon.traceback_head()}"
                )
        except AssertionError as exc:
            self.aborted = f"the daemon does not start again: {exc}"
        if self.aborted:
            self.problem(op, "crash loop", case, None, self.aborted)

    def pending(self) -> int:
        return int(
            self.db.execute("SELECT count(*) FROM inbox WHERE status = 'pending'").fetchone()[0]
        )

    def ready(self) -> bool:
        if not self.daemon.alive():
            return False
        try:
            return self.health.send("GET", "/readyz")[0] == 200
        except (ConnectionError, http.client.HTTPException, OSError):
            return False

    def json_answer(
        self, op: Op, case: Case, status: int, headers: dict[str, str], data: bytes
    ) -> Any:
        try:
            return json.loads(data)
        except ValueError:
            if status == 400 and headers.get("content-type", "").startswith("text/"):
                # aiohttp's HTTP parser refused the message (a control character in a
                # header): the application never saw it; counted, not a failure
                self.tallies[op.name].parser_refusals += 1
            else:
                self.problem(op, "answer not JSON", case, status, repr(data[:300]))
            return None

    def check_refused(self, op: Op, case: Case, status: int, answer: Any, rows_before: int) -> None:
        if self.inbox_rows() != rows_before:
            self.problem(op, "unauthenticated stored", case, status, "inbox row count changed")
        if status >= 500:
            return  # a 5xx is recorded as such; a 503 with Retry-After is back-pressure
        if status not in (400, 401):
            self.problem(op, "unauthenticated not refused", case, status, json.dumps(answer)[:500])
        elif not _error_field(answer):
            self.problem(op, "error names no field", case, status, json.dumps(answer)[:500])

    def check_authenticated(
        self, op: Op, case: Case, status: int, answer: Any, tally: Tally
    ) -> None:
        is_error = isinstance(answer, dict) and "error" in answer
        valid = body_conforms(case.body, op.body_schema) and header_conforms(op, case)
        if is_error and status < 500 and not _error_field(answer):
            self.problem(op, "error names no field", case, status, json.dumps(answer)[:500])
        if status < 300 and not is_error and op.body_schema is not None and not valid:
            self.problem(op, "invalid input accepted", case, status, json.dumps(answer)[:500])
        if op.body_schema is None:
            return
        if isinstance(answer, dict) and isinstance(answer.get("inbox_id"), int):
            self.told.add(answer["inbox_id"])
        if not is_error:
            tally.accepted += 1
            return
        error = answer["error"]
        inbox_id = error.get("inbox_id") if isinstance(error, dict) else None
        if status in NOT_A_VERDICT or status >= 500:
            if isinstance(inbox_id, int) and error.get("quarantined") is True:
                # kept and answered a status the sender retries (a wrong X-Optiturn-Id from
                # an authenticated sender: optiturn_mismatch_status, 503 by default)
                self.told.add(inbox_id)
            return
        if isinstance(inbox_id, int) and error.get("duplicate_of") == inbox_id:
            # a repeat of a body stored earlier: refused, and the stored item stands
            self.told.add(inbox_id)
            if self.inbox_row(inbox_id) is None:
                self.problem(op, "duplicate of nothing", case, status, f"inbox {inbox_id}")
            return
        if not isinstance(inbox_id, int) or error.get("quarantined") is not True:
            self.problem(op, "refused but not quarantined", case, status, json.dumps(answer)[:500])
            return
        self.told.add(inbox_id)
        row = self.inbox_row(inbox_id)
        if row is None or row[0] != "quarantined" or not row[1]:
            self.problem(op, "quarantine not stored", case, status, f"inbox {inbox_id}: {row}")
        else:
            tally.quarantined += 1

    def burst(self, op: Op, bodies: list[bytes], workers: int = 10) -> None:
        """Concurrent authenticated invalid webhooks (issue 9's receive/quarantine race)."""
        case = Case("burst")

        def one(body: bytes) -> tuple[int | None, dict[str, str], bytes]:
            client = Client(self.daemon)
            try:
                return client.send(op.method, *build_request(op, replace(case, body=body)), body)
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                return None, {}, repr(exc).encode()
            finally:
                client.close()

        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(one, bodies))
        tally = self.tallies[op.name]
        alive = self.daemon_ok(op, Case("after the burst"), None)
        for body, (status, headers, data) in zip(bodies, results, strict=True):
            burst_case = replace(case, body=body)
            tally.cases += 1
            if status is not None:
                tally.statuses[status] += 1
            if deferred(status, headers):
                tally.deferred += 1
                continue
            if status is None or status >= 500:
                tally.server_errors += status is not None
                self.problem(op, "burst: 5xx or no answer", burst_case, status, repr(data[:500]))
                continue
            answer = self.json_answer(op, burst_case, status, headers, data)
            if alive and answer is not None:
                self.check_authenticated(op, burst_case, status, answer, tally)

    def write_report(self) -> None:
        figures = {
            name: {
                "cases": t.cases,
                "seconds": round(t.seconds, 1),
                "authenticated": t.authenticated,
                "statuses": dict(sorted(t.statuses.items())),
                "accepted": t.accepted,
                "quarantined": t.quarantined,
                "5xx": t.server_errors,
                "exits": t.exits,
                "http_parser_400": t.parser_refusals,
                "503_retry_after": t.deferred,
            }
            for name, t in self.tallies.items()
        }
        self.report.write_text(
            json.dumps(
                {
                    "seed": FUZZ_SEED,
                    "cases_per_primary_operation": FUZZ_CASES,
                    "daemon_starts": self.daemon.starts,
                    "figures": figures,
                    "problems": [p.__dict__ for p in self.problems],
                },
                indent=1,
            )
        )


def deferred(status: int | None, headers: dict[str, str]) -> bool:
    """A 503 with ``Retry-After``: the documented "not now, nothing done, retry" (back-pressure,
    a partner or the store unavailable), which Optoro and ReturnLogic retry: not a failure."""
    return status == 503 and "retry-after" in headers


def _error_field(answer: Any) -> bool:
    if not isinstance(answer, dict) or not isinstance(answer.get("error"), dict):
        return False
    error = answer["error"]
    return (
        isinstance(error.get("field"), str) and bool(error["field"]) and bool(error.get("message"))
    )


def wait_until(condition: Callable[[], bool], within: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


# --- fixtures and tests -------------------------------------------------------------------------


@dataclass
class World:
    daemon: Daemon
    fuzz: Fuzz
    config: Path
    document: dict[str, Any]
    folder: Path
    skus: dict[str, list[str]]

    def op(self, method: str, path: str, cases: int) -> Op:
        operation = self.document["paths"].get(path, {}).get(method.lower())
        assert operation is not None, f"{method} {path} is not in /openapi.json"
        parts = path.strip("/").split("/")
        retailer, platform = (parts[1], parts[2]) if parts[0] == "retailers" else (None, None)
        skus = self.skus.get(RETAILERS[retailer]["team"], []) if retailer else []
        return Op(
            method, path, operation, self.document["components"], cases, retailer, platform, skus
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("fuzz")
    print(f"fuzz seed {FUZZ_SEED} (FUZZ_SEED), {FUZZ_CASES} cases per primary operation")
    with Sandboxes() as sandboxes:
        config = write_config(folder, sandboxes.urls)
        daemon = Daemon(config, folder / "daemon.log")
        daemon.start()
        report = Path(FUZZ_REPORT) if FUZZ_REPORT else folder / "fuzz-report.json"
        fuzz = Fuzz(daemon, folder / "bridge.db", report)
        try:
            status, _, data = fuzz.client.send("GET", "/openapi.json")
            assert status == 200
            yield World(daemon, fuzz, config, json.loads(data), folder, sandboxes.skus)
        finally:
            fuzz.write_report()
            print(f"fuzz report: {fuzz.report}")
            fuzz.close()
            daemon.stop()


def test_openapi_document_is_valid_and_names_every_route(world: World) -> None:
    """The served document is valid OpenAPI 3.1, lists every route of the daemon's router (the
    application the same config builds in-process), with the handlers' own models, and holds
    no secret."""
    from bridge.app import build_app, build_runtime
    from bridge.config import load_config
    from bridge.openapi import SCHEMA_REF
    from mappings.kibo import KiboNotificationIn
    from mappings.optoro import ExchangeOrderIn, RmaIn
    from mappings.returnlogic import WebhookIn

    document = world.document
    validate_openapi(document)
    app = build_app(build_runtime(load_config(world.config, env=SECRETS)))
    registered = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    served = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert served == registered
    assert served == {(m, p) for m, p, _ in OPERATIONS}, "OPERATIONS must list every route"
    schemas = document["components"]["schemas"]
    for model in (RmaIn, ExchangeOrderIn, KiboNotificationIn, WebhookIn):
        own = model.model_json_schema(ref_template=SCHEMA_REF, mode="validation")
        own.pop("$defs", None)
        assert schemas[model.__name__] == own
    paths = document["paths"]
    assert paths["/retailers/acme/optoro/rmas"]["post"]["security"] == [{"basic": []}]
    assert paths["/retailers/beta/optoro/rmas"]["post"]["security"] == [
        {"apiKey.header.X-Api-Key": []}
    ]
    assert paths["/retailers/acme/returnlogic/webhooks"]["post"]["security"] == [
        {"apiKey.query.key": []}
    ]
    exchange = paths["/retailers/acme/optoro/exchange_orders"]["post"]
    assert {p["name"] for p in exchange["parameters"]} == {
        "X-Optiturn-Id",
        "X-Optiturn-Api-Version",
    }
    assert exchange["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ExchangeOrderIn"
    }
    text = json.dumps(document)
    for secret in SECRETS.values():
        assert secret not in text


@pytest.mark.parametrize(
    ("method", "path", "cases"), OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS]
)
def test_fuzz_operation(world: World, method: str, path: str, cases: int) -> None:
    """``cases`` generated requests (plus the corpus, and a burst for body endpoints) against
    one operation; every outcome is checked as the module says; any problem fails the test (the
    run goes on, and the last test reports the whole run)."""
    op = world.op(method, path, cases)
    fuzz = world.fuzz
    before = fuzz.tallies[op.name].cases
    problems_before = len(fuzz.problems)
    strategy = case_strategy(op)

    @seed(FUZZ_SEED)
    @settings(
        max_examples=cases,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
            HealthCheck.function_scoped_fixture,
        ],
        print_blob=False,
    )
    @given(case=strategy)
    def fuzz_op(case: Case) -> None:
        fuzz.run(op, case)

    run = fuzz_op
    for corpus_case in corpus_for(op):
        run = example(case=corpus_case)(run)
    started = time.monotonic()
    run()
    burst = burst_bodies(op)
    if burst:
        fuzz.burst(op, burst)
    fuzz.tallies[op.name].seconds += time.monotonic() - started
    tally = fuzz.tallies[op.name]
    sent = tally.cases - before
    print(f"{op.name}: {sent} cases, {json.dumps(tally.__dict__, default=dict)}")
    assert fuzz.aborted is None, fuzz.aborted
    assert sent >= min(cases, 50), f"only {sent} cases were generated"
    mine = [p for p in fuzz.problems[problems_before:] if p.operation == op.name]
    assert not mine, summarize(mine, f"{op.name}: {sent} cases, seed {FUZZ_SEED}")


def burst_bodies(op: Op) -> list[bytes]:
    """60 distinct invalid bodies sent at once (issue 9: receive commits the item pending, the
    worker leases it, the request side quarantines it in a second transaction)."""
    if op.path.endswith("/optoro/rmas"):
        return [
            encode_json({"rma_identifier": f"BAD{i}", "status": "NOT_A_STATUS"}) for i in range(60)
        ]
    if op.path.endswith("/returnlogic/webhooks"):
        return [
            encode_json({"eventId": f"b{i}", "resourceAction": "nope", "rlRmaId": i})
            for i in range(60)
        ]
    if op.path.endswith("/kibo/notifications"):
        return [encode_json([i]) for i in range(60)]
    return []


def summarize(problems: list[Problem], head: str) -> str:
    kinds = Counter(p.kind for p in problems)
    shown: Counter[tuple[str, str]] = Counter()
    lines = []
    for p in problems:
        shown[(p.operation, p.kind)] += 1
        if shown[(p.operation, p.kind)] <= 3:
            lines.append(p.line())
    return f"{head}: {len(problems)} problems {dict(kinds)}:\n" + "\n".join(lines)


def test_no_unauthenticated_row_no_secret_and_a_restart_stays_up(world: World) -> None:
    """Every inbox row is one an authenticated sender was told about; no secret in the log;
    after SIGTERM the daemon starts again, gets ready, drains the inbox and stays up. Then
    every problem of the whole run is reported (this test fails on any)."""
    fuzz, daemon = world.fuzz, world.daemon
    run = Op("RUN", "(whole run)", {}, {}, 0)
    rows = {int(r[0]) for r in fuzz.db.execute("SELECT id FROM inbox")}
    untold = sorted(rows - fuzz.told)
    if untold:
        detail = f"{len(untold)} rows, e.g. {untold[:20]}"
        fuzz.problem(run, "stored, sender not told", Case("end"), None, detail)
    log = daemon.log.read_text(errors="replace")
    leaked = [name for name, secret in SECRETS.items() if secret in log]
    if leaked:
        fuzz.problem(run, "secret in the log", Case("end"), None, ", ".join(leaked))
    fuzz.client.close()
    fuzz.health.close()
    stopped = daemon.stop()
    daemon.start()
    ready = wait_until(fuzz.ready, 30)
    drained = wait_until(lambda: not daemon.alive() or fuzz.pending() == 0, 90)
    outcome = {
        "SIGTERM exit code": stopped,
        "ready": ready,
        "drained": drained,
        "alive": daemon.alive(),
        "healthz": fuzz.healthy(),
    }
    if outcome != {
        "SIGTERM exit code": 0,
        "ready": True,
        "drained": True,
        "alive": True,
        "healthz": True,
    }:
        detail = f"{outcome}\n{daemon.traceback_head()}"
        fuzz.problem(run, "restart did not stay up", Case("restart"), None, detail)
    fuzz.write_report()
    for name, t in fuzz.tallies.items():
        print(
            f"{name}: {t.cases} cases in {t.seconds:.1f} s, 5xx {t.server_errors}, exits {t.exits},"
            f" quarantined {t.quarantined}, statuses {dict(sorted(t.statuses.items()))}"
        )
    assert not fuzz.problems, summarize(
        fuzz.problems, f"the whole run (seed {FUZZ_SEED}, report {fuzz.report})"
    )
