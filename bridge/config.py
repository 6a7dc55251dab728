"""Configuration: TOML files in, one validated and frozen :class:`AppConfig` out.

A file may hold ``[server]``, ``[store]``, any number of ``[retailers.<id>]`` tables and a
top-level ``include = [...]`` of further files, directories or glob patterns (relative to the
including file). ``load_config`` accepts a file or a directory (every ``*.toml`` in it,
sorted). Every string value may use ``${ENV_VAR}`` (``$${`` is a literal ``${``); resolved
values never appear in an error message.

Inside ``[retailers.<id>]`` the core keys (the fields of :class:`RetailerConfig` except ``id``
and ``platforms``) sit next to one table per platform: ``[retailers.<id>.<adapter>]`` is
validated by that adapter's ``config_model``. A new core table (routes, policy) is a new
field of :class:`RetailerConfig`; nothing else changes.

Every problem is collected before :class:`ConfigError` is raised, each formatted as
``file:line: dotted.key.path: message``.
"""

from __future__ import annotations

import contextlib
import difflib
import glob
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    SerializeAsAny,
    ValidationError,
    field_validator,
)
from pydantic_core import ErrorDetails

from bridge.configbase import ConfigModel
from bridge.errors import ConfigError
from bridge.policy import PolicyConfig
from bridge.registry import AdapterRegistry, load_registry

__all__ = [
    "AppConfig",
    "RetailerConfig",
    "ServerConfig",
    "StoreConfig",
    "check_main",
    "load_config",
    "summarize",
]

M = TypeVar("M", bound=BaseModel)
KeyPath = tuple[str | int, ...]

EXIT_OK = 0
EXIT_INVALID = 2


class ServerConfig(ConfigModel):
    """The ``[server]`` table: the inbound HTTP listener."""

    host: str = Field(default="127.0.0.1", min_length=1, description="address to listen on")
    port: int = Field(default=8080, ge=0, le=65535, description="TCP port; 0 picks a free one")
    max_body_bytes: int = Field(
        default=1_048_576, ge=1, description="larger request bodies are refused with 413"
    )
    shutdown_timeout: float = Field(
        default=8.0,
        gt=0,
        description="seconds in-flight inbound requests get to finish on shutdown, after the"
        " deliveries drained",
    )
    drain_seconds: float = Field(
        default=10.0,
        ge=0,
        description="on SIGTERM/SIGINT/SIGHUP: seconds deliveries already on the wire get to"
        " finish; then they are cancelled (outcome unknown). Deliveries whose request has"
        " not left yet are released at once as not sent",
    )
    header_timeout: float = Field(
        default=10.0,
        gt=0,
        description="seconds a client has to send a complete request head, from the"
        " connection's start or the first byte of its next request; then 408 and closed",
    )
    body_timeout: float = Field(
        default=30.0,
        gt=0,
        description="seconds a client has to send the whole request body once the head is"
        " in; then 408 and closed",
    )
    keepalive_timeout: float = Field(
        default=60.0, gt=0, description="seconds an idle keep-alive connection stays open"
    )
    max_connections_per_peer: int = Field(
        default=256,
        ge=0,
        description="open connections allowed per client address; more are answered 503 and"
        " closed at once. 0: no cap (behind a reverse proxy every client is the proxy)",
    )
    max_inbox_backlog: int = Field(
        default=10_000,
        ge=0,
        description="pending inbox items above which the webhook endpoints answer 503 with"
        " Retry-After (senders retry 5xx); 0: no limit",
    )
    backlog_retry_after: int = Field(
        default=30, ge=1, description="Retry-After seconds of a back-pressure 503"
    )
    instance: str | None = Field(
        default=None,
        min_length=1,
        description="name of this daemon instance (default: the host name); a restarted"
        " instance takes back at once the work it had leased before it stopped. Give each"
        " daemon sharing one store its own name",
    )


_STORE_SCHEMES = ("sqlite", "postgresql", "postgres")


class StoreConfig(ConfigModel):
    """The ``[store]`` table: where inbox, state, outbox and dead letters live.

    ``sqlite:///relative.db`` is relative to the daemon's working directory (not to the
    config file); ``sqlite:////absolute/path.db`` is absolute. A PostgreSQL password goes in
    ``password``, never in ``url``, so the url can be logged.
    """

    url: str = Field(
        default="sqlite:///returns-bridge.db",
        description="sqlite:///PATH or postgresql://USER@HOST:PORT/DB",
    )
    password: SecretStr | None = Field(default=None, description="PostgreSQL password")

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in _STORE_SCHEMES:
            raise ValueError("must start with sqlite:/// or postgresql://")
        if scheme == "sqlite":
            if not rest.startswith("/") or len(rest) < 2:
                raise ValueError("must be sqlite:///RELATIVE/PATH or sqlite:////ABSOLUTE/PATH")
        else:
            userinfo, at, _ = rest.partition("/")[0].rpartition("@")
            if at and ":" in userinfo:
                raise ValueError("must not contain a password; set [store] password instead")
        return url

    @property
    def sqlite_path(self) -> Path | None:
        """The database file of a ``sqlite:///`` url, else ``None``."""
        prefix = "sqlite:///"
        return Path(self.url[len(prefix) :]) if self.url.startswith(prefix) else None


class RetailerConfig(ConfigModel):
    """One ``[retailers.<id>]`` table: core keys plus one table per platform."""

    id: str = Field(description="the <id> of [retailers.<id>]; not written inside the table")
    name: str | None = Field(default=None, description="display name")
    enabled: bool = Field(default=True, description="false keeps the retailer configured but idle")
    routes: dict[str, str] = Field(
        default_factory=dict,
        description="capability -> adapter serving it (catalog, exchange_order_sink, ...);"
        " needed only when two configured adapters offer the same capability",
    )
    policy: PolicyConfig = Field(
        default_factory=PolicyConfig,
        description="when returns are created and refunds confirmed (see bridge.policy)",
    )
    platforms: dict[str, SerializeAsAny[BaseModel]] = Field(
        default_factory=dict,
        description="adapter name -> that adapter's validated config, in file order",
    )

    @overload
    def platform(self, name: str) -> BaseModel: ...

    @overload
    def platform(self, name: str, model: type[M]) -> M: ...

    def platform(self, name: str, model: type[BaseModel] | None = None) -> BaseModel:
        """The ``[retailers.<id>.<name>]`` config; ``KeyError`` when the table is absent."""
        try:
            config = self.platforms[name]
        except KeyError:
            raise KeyError(
                f"retailer {self.id!r} has no [retailers.{self.id}.{name}] table"
            ) from None
        if model is not None and not isinstance(config, model):
            raise TypeError(f"{name} config is {type(config).__name__}, not {model.__name__}")
        return config


_DERIVED_RETAILER_FIELDS = frozenset({"id", "platforms"})
_RETAILER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def _core_retailer_keys() -> frozenset[str]:
    return frozenset(RetailerConfig.model_fields) - _DERIVED_RETAILER_FIELDS


class AppConfig(ConfigModel):
    """Everything the daemon needs, validated as a whole."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    retailers: dict[str, RetailerConfig] = Field(default_factory=dict)
    source_files: list[Path] = Field(default_factory=list, description="every file loaded")


def load_config(
    path: Path | str,
    env: Mapping[str, str] | None = None,
    registry: AdapterRegistry | None = None,
) -> AppConfig:
    """Load a config file or directory; raise :class:`ConfigError` listing every problem."""
    loader = _Loader(
        env=os.environ if env is None else env,
        registry=load_registry() if registry is None else registry,
    )
    return loader.load(Path(path))


def summarize(config: AppConfig) -> list[str]:
    """One line per retailer, e.g. ``acme: enabled, platforms optoro, kibo``; no secrets."""
    lines = []
    for rid, retailer in config.retailers.items():
        state = "enabled" if retailer.enabled else "disabled"
        platforms = ", ".join(retailer.platforms) or "none"
        lines.append(f"{rid}: {state}, platforms {platforms}")
    return lines


def check_main(path: str) -> int:
    """``returns-bridge check --config PATH``: print the summary (0) or every problem (2)."""
    try:
        config = load_config(Path(path))
    except ConfigError as exc:
        for line in exc.problems or [str(exc)]:
            print(line)
        return EXIT_INVALID
    for line in summarize(config) or ["no retailers configured"]:
        print(line)
    return EXIT_OK


# --- line numbers ---------------------------------------------------------------------------


class _KeyLines:
    """The line of every key path in one TOML document (tomllib reports none)."""

    def __init__(self) -> None:
        self._explicit: dict[KeyPath, int] = {}
        self._implicit: dict[KeyPath, int] = {}

    def define(self, path: KeyPath, line: int) -> None:
        self._explicit.setdefault(path, line)

    def mention(self, path: KeyPath, line: int) -> None:
        self._implicit.setdefault(path, line)

    def line_of(self, path: KeyPath) -> int:
        """The line of ``path`` or of its nearest known parent (a missing key's table); else 1."""
        for end in range(len(path), 0, -1):
            prefix = path[:end]
            line = self._explicit.get(prefix) or self._implicit.get(prefix)
            if line:
                return line
        return 1


class _ScanError(Exception):
    pass


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class _Scanner:
    """Walks TOML text that tomllib already accepted, recording where each key is."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.lines = _KeyLines()
        self._arrays_of_tables: dict[KeyPath, int] = {}

    def scan(self) -> _KeyLines:
        with contextlib.suppress(_ScanError, IndexError, tomllib.TOMLDecodeError):
            self._document()  # best effort: the lines found before a surprise stay useful
        return self.lines

    def _peek(self, n: int = 1) -> str:
        return self.text[self.pos : self.pos + n]

    def _advance(self, n: int = 1) -> None:
        self.line += self.text.count("\n", self.pos, self.pos + n)
        self.pos = min(self.pos + n, len(self.text))

    def _eof(self) -> bool:
        return self.pos >= len(self.text)

    def _expect(self, token: str) -> None:
        if self._peek(len(token)) != token:
            raise _ScanError(token)
        self._advance(len(token))

    def _skip(self, newlines: bool) -> None:
        while not self._eof():
            char = self._peek()
            if char in " \t" or (newlines and char in "\r\n"):
                self._advance()
            elif char == "#":
                end = self.text.find("\n", self.pos)
                self._advance((len(self.text) if end < 0 else end) - self.pos)
            else:
                return

    def _document(self) -> None:
        table: KeyPath = ()
        while True:
            self._skip(newlines=True)
            if self._eof():
                return
            line = self.line
            if self._peek(2) == "[[":
                self._advance(2)
                key = self._key()
                self._expect("]]")
                parent = self._resolve(key[:-1], line)
                array = (*parent, key[-1])
                index = self._arrays_of_tables.get(array, -1) + 1
                self._arrays_of_tables[array] = index
                self.lines.mention(array, line)
                table = (*array, index)
                self.lines.define(table, line)
            elif self._peek() == "[":
                self._advance()
                key = self._key()
                self._expect("]")
                table = self._resolve(key, line)
                self.lines.define(table, line)
            else:
                self._keyval(table)

    def _resolve(self, key: KeyPath, line: int) -> KeyPath:
        """A header's path, with the current index of every array of tables on the way."""
        path: KeyPath = ()
        for part in key:
            path = (*path, part)
            self.lines.mention(path, line)
            if path in self._arrays_of_tables:
                path = (*path, self._arrays_of_tables[path])
        return path

    def _key(self) -> KeyPath:
        parts: list[str | int] = []
        while True:
            self._skip(newlines=False)
            start = self.pos
            char = self._peek()
            if char == '"':
                self._basic_string()
                parts.append(tomllib.loads("k = " + self.text[start : self.pos])["k"])
            elif char == "'":
                self._literal_string()
                parts.append(self.text[start + 1 : self.pos - 1])
            else:
                match = _BARE_KEY.match(self.text, self.pos)
                if match is None:
                    raise _ScanError("key")
                parts.append(match.group())
                self._advance(match.end() - self.pos)
            self._skip(newlines=False)
            if self._peek() != ".":
                return tuple(parts)
            self._advance()

    def _keyval(self, table: KeyPath) -> None:
        line = self.line
        key = self._key()
        self._expect("=")
        self._skip(newlines=False)
        for end in range(1, len(key)):
            self.lines.mention((*table, *key[:end]), line)
        path = (*table, *key)
        self.lines.define(path, line)
        self._value(path)

    def _value(self, path: KeyPath) -> None:
        if self._peek(3) in ('"""', "'''"):
            self._multiline_string(self._peek(3))
        elif self._peek() == '"':
            self._basic_string()
        elif self._peek() == "'":
            self._literal_string()
        elif self._peek() == "[":
            self._array(path)
        elif self._peek() == "{":
            self._inline_table(path)
        else:
            start = self.pos
            while not self._eof() and self._peek() not in ",]}\r\n#":
                self._advance()
            if self.pos == start:
                raise _ScanError("value")

    def _basic_string(self) -> None:
        self._advance()
        while not self._eof():
            char = self._peek()
            self._advance(2 if char == "\\" else 1)
            if char == '"':
                return
        raise _ScanError("string")

    def _literal_string(self) -> None:
        end = self.text.find("'", self.pos + 1)
        if end < 0:
            raise _ScanError("string")
        self._advance(end + 1 - self.pos)

    def _multiline_string(self, quotes: str) -> None:
        self._advance(3)
        while not self._eof():
            if quotes == '"""' and self._peek() == "\\":
                self._advance(2)
            elif self._peek(3) == quotes:
                self._advance(3)
                for _ in range(2):
                    if self._peek() == quotes[0]:
                        self._advance()
                return
            else:
                self._advance()
        raise _ScanError("string")

    def _array(self, path: KeyPath) -> None:
        self._advance()
        index = 0
        while True:
            self._skip(newlines=True)
            if self._eof() or self._peek() == "]":
                self._advance()
                return
            element = (*path, index)
            self.lines.define(element, self.line)
            self._value(element)
            index += 1
            self._skip(newlines=True)
            if self._peek() == ",":
                self._advance()

    def _inline_table(self, path: KeyPath) -> None:
        self._advance()
        while True:
            self._skip(newlines=True)
            if self._eof() or self._peek() == "}":
                self._advance()
                return
            self._keyval(path)
            self._skip(newlines=True)
            if self._peek() == ",":
                self._advance()


def _scan_lines(text: str) -> _KeyLines:
    return _Scanner(text).scan()


# --- environment references -----------------------------------------------------------------

_ENV_REF = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\{")
_MIN_REDACTED_LEN = 4


@dataclass
class _EnvResult:
    problems: list[tuple[KeyPath, str]] = field(default_factory=list)
    values: list[str] = field(default_factory=list)


def _substitute(value: Any, path: KeyPath, env: Mapping[str, str], result: _EnvResult) -> Any:
    """``value`` with every ``${VAR}`` in its strings resolved from ``env``."""
    if isinstance(value, dict):
        return {k: _substitute(v, (*path, k), env, result) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, (*path, i), env, result) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if match.group() == "$${":
            return "${"
        if name is None:
            result.problems.append((path, "malformed ${...} reference; write $${ for a literal ${"))
        elif name not in env:
            result.problems.append((path, f"environment variable {name} is not set"))
        else:
            result.values.append(env[name])
            return env[name]
        return match.group()

    return _ENV_REF.sub(replace, value)


# --- loading --------------------------------------------------------------------------------


@dataclass
class _Source:
    """One parsed file, after ``${VAR}`` substitution."""

    path: Path
    lines: _KeyLines
    data: dict[str, Any]
    env_failed: list[KeyPath]

    def where(self, path: KeyPath) -> str:
        return f"{self.path}:{self.lines.line_of(path)}"


@dataclass(frozen=True)
class _Problem:
    file: Path
    line: int | None
    path: KeyPath
    message: str

    def __str__(self) -> str:
        where = str(self.file) if self.line is None else f"{self.file}:{self.line}"
        key = f" {_dotted(self.path)}:" if self.path else ""
        return f"{where}:{key} {self.message}"


_TOP_LEVEL_KEYS = ("include", "server", "store", "retailers")
_TOML_LINE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TOML_END = re.compile(r"\s*\(at end of document\)$")


def _dotted(path: KeyPath) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            key = part if _BARE_KEY.fullmatch(part) else json.dumps(part, ensure_ascii=False)
            text += f".{key}" if text else key
    return text


def _is_glob(pattern: str) -> bool:
    return any(char in pattern for char in "*?[")


def _toml_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.toml") if p.is_file())


def _normalized(path: Path) -> Path:
    return Path(os.path.normpath(path))


def _include_targets(base: Path, entry: str, including: Path) -> list[Path] | None:
    """The files an ``include`` entry names (a glob never matches ``including``); None if absent."""
    if _is_glob(entry):
        matches = (
            _normalized(base / m) for m in sorted(glob.glob(entry, root_dir=base, recursive=True))
        )
        return [m for m in matches if m.is_file() and m.resolve() != including]
    target = _normalized(base / entry)
    if target.is_dir():
        return _toml_files(target)
    return [target] if target.exists() else None


class _Loader:
    """Reads files and includes, then validates everything, collecting every problem."""

    def __init__(self, env: Mapping[str, str], registry: AdapterRegistry) -> None:
        self.env = env
        self.registry = registry
        self.sources: list[_Source] = []
        self._problems: list[_Problem] = []
        self._file_order: dict[Path, int] = {}
        self._loaded: set[Path] = set()
        self._secrets: set[str] = set()

    # problems

    def _problem(self, file: Path, line: int | None, path: KeyPath, message: str) -> None:
        self._file_order.setdefault(file, len(self._file_order))
        self._problems.append(_Problem(file, line, path, message))

    def _at(self, source: _Source, path: KeyPath, message: str) -> None:
        self._problem(source.path, source.lines.line_of(path), path, message)

    def _report(self) -> list[str]:
        ordered = sorted(self._problems, key=lambda p: (self._file_order[p.file], p.line or 0))
        return list(dict.fromkeys(str(p) for p in ordered))

    # files and includes

    def load(self, root: Path) -> AppConfig:
        if root.is_dir():
            files = _toml_files(root)
            if not files:
                self._problem(root, None, (), "no *.toml files in this directory")
        else:
            files = [root]
        for file in files:
            self._load_file(file, stack=(), site=None)
        config = self._build()
        if self._problems or config is None:
            raise ConfigError(problems=self._report())
        return config

    def _load_file(
        self,
        file: Path,
        stack: tuple[tuple[Path, Path], ...],
        site: tuple[_Source, KeyPath] | None,
    ) -> None:
        resolved = file.resolve()
        if resolved in self._loaded:
            return
        self._loaded.add(resolved)
        self._file_order.setdefault(file, len(self._file_order))
        try:
            raw = file.read_bytes()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            if site is None:
                self._problem(file, None, (), f"cannot read: {reason}")
            else:
                self._at(site[0], site[1], f"cannot read {file}: {reason}")
            return
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            self._problem(file, line, (), "not valid UTF-8")
            return
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            self._toml_error(file, text, str(exc))
            return
        env = _EnvResult()
        data = _substitute(data, (), self.env, env)
        self._secrets.update(v for v in env.values if len(v) >= _MIN_REDACTED_LEN)
        source = _Source(file, _scan_lines(text), data, [p for p, _ in env.problems])
        for path, message in env.problems:
            self._at(source, path, message)
        self.sources.append(source)
        self._includes(source, (*stack, (resolved, file)))

    def _toml_error(self, file: Path, text: str, message: str) -> None:
        at_line = _TOML_LINE.search(message)
        if at_line:
            line = int(at_line.group(1))
            message = f"{message[: at_line.start()]} (column {at_line.group(2)})"
        else:
            line = text.count("\n") + 1
            message = _TOML_END.sub(" (at end of file)", message)
        self._problem(file, line, (), message)

    def _includes(self, source: _Source, stack: tuple[tuple[Path, Path], ...]) -> None:
        entries = source.data.get("include")
        if entries is None:
            return
        if not isinstance(entries, list):
            self._at(source, ("include",), "must be an array of file names or glob patterns")
            return
        base = source.path.parent
        for index, entry in enumerate(entries):
            site: KeyPath = ("include", index)
            if not isinstance(entry, str):
                self._at(source, site, "must be a string")
                continue
            if any(site[: len(p)] == p for p in source.env_failed):
                continue
            targets = _include_targets(base, entry, including=stack[-1][0])
            if targets is None:
                self._at(source, site, f"no such file: {_normalized(base / entry)}")
                continue
            for target in targets:
                self._include(source, site, target, stack)

    def _include(
        self,
        source: _Source,
        site: KeyPath,
        target: Path,
        stack: tuple[tuple[Path, Path], ...],
    ) -> None:
        resolved = target.resolve()
        chain = [resolved_path for resolved_path, _ in stack]
        if resolved in chain:
            cycle = [str(shown) for _, shown in stack[chain.index(resolved) :]]
            self._at(source, site, f"include cycle: {' -> '.join([*cycle, str(target)])}")
            return
        self._load_file(target, stack, (source, site))

    # validation

    def _build(self) -> AppConfig | None:
        sections: dict[str, _Source] = {}
        retailer_tables: dict[str, tuple[_Source, Any]] = {}
        for source in self.sources:
            for key in source.data:
                if key not in _TOP_LEVEL_KEYS:
                    self._at(
                        source,
                        (key,),
                        "unknown key; top-level keys are " + ", ".join(_TOP_LEVEL_KEYS),
                    )
            for name in ("server", "store"):
                if name not in source.data:
                    continue
                if name in sections:
                    where = sections[name].where((name,))
                    self._at(source, (name,), f"[{name}] is already defined at {where}")
                else:
                    sections[name] = source
            tables = source.data.get("retailers")
            if tables is None:
                continue
            if not isinstance(tables, dict):
                self._at(source, ("retailers",), "must be a table")
                continue
            for rid, table in tables.items():
                if rid in retailer_tables:
                    where = retailer_tables[rid][0].where(("retailers", rid))
                    message = f"retailer {rid!r} is already defined at {where}"
                    self._at(source, ("retailers", rid), message)
                else:
                    retailer_tables[rid] = (source, table)

        server = self._section(ServerConfig, sections.get("server"), "server")
        store = self._section(StoreConfig, sections.get("store"), "store")
        retailers = {
            rid: self._retailer(rid, source, table)
            for rid, (source, table) in retailer_tables.items()
        }
        if server is None or store is None:
            return None
        valid = {rid: r for rid, r in retailers.items() if r is not None}
        if len(valid) != len(retailers):
            return None
        return AppConfig(
            server=server,
            store=store,
            retailers=valid,
            source_files=[s.path for s in self.sources],
        )

    def _section(self, model: type[M], source: _Source | None, name: str) -> M | None:
        if source is None:
            return model()
        return self._validate(model, source, (name,), source.data[name])

    def _retailer(self, rid: str, source: _Source, table: Any) -> RetailerConfig | None:
        prefix: KeyPath = ("retailers", rid)
        ok = True
        if not _RETAILER_ID.fullmatch(rid):
            self._at(source, prefix, "retailer id must be letters, digits, '-' or '_'")
            ok = False
        if not isinstance(table, dict):
            self._at(source, prefix, "must be a table")
            return None
        core_keys = _core_retailer_keys()
        core: dict[str, Any] = {}
        platforms: dict[str, BaseModel] = {}
        for key, value in table.items():
            if key in core_keys:
                core[key] = value
            elif key in self.registry:
                model = self.registry.get(key).config_model
                config = self._validate(model, source, (*prefix, key), value)
                if config is None:
                    ok = False
                else:
                    platforms[key] = config
            else:
                ok = False
                if isinstance(value, dict):
                    installed = ", ".join(self.registry.names()) or "none"
                    message = f"unknown platform {key!r}; installed adapters: {installed}"
                else:
                    message = "unknown key"
                self._at(source, (*prefix, key), message)
        retailer = self._validate(
            RetailerConfig, source, prefix, {**core, "id": rid, "platforms": platforms}
        )
        if retailer is not None and ok:
            ok = self._check_routes(source, prefix, retailer)
        return retailer if ok else None

    def _check_routes(self, source: _Source, prefix: KeyPath, retailer: RetailerConfig) -> bool:
        """Each route names a known capability and a configured adapter that provides it for
        this retailer's config (as its :class:`AdapterSpec` declares), and no capability that
        several configured adapters provide is left without a route: what the daemon would
        otherwise only find out inside an inbox transaction."""
        from bridge.ports import CAPABILITIES, CORE_CAPABILITIES, CORE_PROVIDER

        providers: dict[str, set[str]] = {c: set() for c in CAPABILITIES}
        for capability in CORE_CAPABILITIES:
            providers[capability].add(CORE_PROVIDER)
        for name, platform_config in retailer.platforms.items():
            for capability in self.registry.get(name).provided(platform_config):
                providers[capability].add(name)
        ok = True
        for capability, adapter in retailer.routes.items():
            message = self._route_problem(retailer, capability, adapter, providers)
            if message is not None:
                self._at(source, (*prefix, "routes", capability), message)
                ok = False
        for capability, names in sorted(providers.items()):
            if len(names) > 1 and capability not in retailer.routes:
                choices = " or ".join(repr(n) for n in sorted(names))
                message = (
                    f"several configured adapters provide this capability: route it to {choices}"
                )
                self._at(source, (*prefix, "routes", capability), message)
                ok = False
        return ok

    def _route_problem(
        self,
        retailer: RetailerConfig,
        capability: str,
        adapter: str,
        providers: Mapping[str, set[str]],
    ) -> str | None:
        from bridge.ports import CAPABILITIES, CORE_PROVIDER

        if capability not in CAPABILITIES:
            close = difflib.get_close_matches(capability, sorted(CAPABILITIES), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            known = ", ".join(sorted(CAPABILITIES))
            return f"unknown capability {capability!r}{hint}; capabilities: {known}"
        found = providers[capability]
        offered = ", ".join(repr(n) for n in sorted(found)) or "none"
        if adapter in found:
            return None
        if adapter != CORE_PROVIDER and adapter not in self.registry:
            installed = ", ".join(self.registry.names()) or "none"
            return f"unknown adapter {adapter!r}; installed adapters: {installed}"
        if adapter != CORE_PROVIDER and adapter not in retailer.platforms:
            return (
                f"adapter {adapter!r} is not configured for this retailer (no"
                f" [retailers.{retailer.id}.{adapter}] table); providers of {capability}: {offered}"
            )
        declared = (
            self.registry.get(adapter).capabilities if adapter != CORE_PROVIDER else frozenset()
        )
        if capability in declared:
            return (
                f"adapter {adapter!r} does not provide {capability} with this retailer's"
                f" [retailers.{retailer.id}.{adapter}] settings (is it disabled there?);"
                f" providers of {capability}: {offered}"
            )
        return (
            f"adapter {adapter!r} does not provide {capability}; providers of {capability}:"
            f" {offered}"
        )

    def _validate(self, model: type[M], source: _Source, prefix: KeyPath, data: Any) -> M | None:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                path = (*prefix, *_clean_loc(error, data))
                if any(path[: len(p)] == p for p in source.env_failed):
                    continue
                message, extra = _message(error)
                self._at(source, (*path, *extra), self._redact(message, error))
            return None

    def _redact(self, message: str, error: ErrorDetails) -> str:
        """Defence in depth: validators written by adapter authors may echo their input."""
        secrets = set(self._secrets)
        given = error.get("input")
        if isinstance(given, str) and len(given) >= _MIN_REDACTED_LEN:
            secrets.add(given)
        for secret in sorted(secrets, key=len, reverse=True):
            message = message.replace(secret, "***")
        return message


def _clean_loc(error: ErrorDetails, data: Any) -> KeyPath:
    """The TOML key path of a pydantic error ``loc``, without union tags and member names."""
    loc = error["loc"]
    path: list[str | int] = []
    current = data
    for index, part in enumerate(loc):
        in_dict = isinstance(current, dict) and isinstance(part, str) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        if in_dict or in_list:
            path.append(part)
            current = current[part]
        elif index == len(loc) - 1 and error["type"] == "missing" and isinstance(part, str):
            path.append(part)
    return tuple(path)


_TABLE_TYPES = frozenset({"model_type", "model_attributes_type", "dict_type"})
_PREFIXES = (("Input should be ", "must be "), ("Value error, ", ""), ("Assertion failed, ", ""))


def _message(error: ErrorDetails) -> tuple[str, KeyPath]:
    """Operator-facing text for a pydantic error, and any key to add to its path."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return "missing required key", ()
    if kind == "extra_forbidden":
        return "unknown key", ()
    if kind in _TABLE_TYPES:
        return "must be a table", ()
    if kind in ("union_tag_not_found", "union_tag_invalid"):
        key = str(ctx.get("discriminator", "")).strip("'")
        extra: KeyPath = (key,) if _BARE_KEY.fullmatch(key) else ()
        if kind == "union_tag_not_found":
            return "missing required key", extra
        return f"must be one of {ctx.get('expected_tags', '')}", extra
    message = str(error["msg"])
    for prefix, replacement in _PREFIXES:
        if message.startswith(prefix):
            message = replacement + message[len(prefix) :]
    return message, ()
