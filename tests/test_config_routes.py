"""``[retailers.<id>.routes]`` is checked against the capabilities the configured adapters
declare, at load (``check`` and ``run``): every mistake is a ``file:line`` error, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel

from bridge.app import build_runtime
from bridge.config import RetailerConfig, check_main, load_config
from bridge.errors import ConfigError
from bridge.ports import CAPABILITIES, CORE_PROVIDER, AdapterContext, AdapterSpec
from bridge.registry import AdapterRegistry, load_registry

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.toml"
EXAMPLE_ENV = {
    "ACME_OPTORO_CLIENT_SECRET": "optoro-client-secret-value",
    "ACME_OPTORO_WEBHOOK_PASSWORD": "optoro-webhook-password-value",
    "ACME_RETURNLOGIC_CLIENT_SECRET": "returnlogic-client-secret-value",
    "ACME_KIBO_TOKEN": "kibo-token-value",
    "ACME_KIBO_NOTIFY_SECRET": "kibo-notify-value",
}
KNOWN = ", ".join(sorted(CAPABILITIES))

PLATFORMS = """
[retailers.acme.optoro]
base_url = "https://optoro.test"
client_id = "acme"
client_secret = "optoro-secret"
optiturn_id = "acme-optiturn"
[retailers.acme.optoro.inbound_auth]
kind = "basic"
username = "optoro"
password = "hook-password"

[retailers.acme.kibo]
base_url = "https://kibo.test"
token = "kibo-token"
"""
RETURNLOGIC = """
[retailers.acme.returnlogic]
base_url = "https://returnlogic.test"
team_id = "acme-team"
static_token = "rl-token"
"""


def write(tmp_path: Path, routes: str, tables: str = PLATFORMS) -> Path:
    path = tmp_path / "bridge.toml"
    text = f"[retailers.acme]\nname = 'Acme'\n{textwrap.dedent(routes).strip()}\n{tables}"
    path.write_text(text, encoding="utf-8")
    return path


def line_of(path: Path, needle: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(n for n, line in enumerate(lines, 1) if needle in line)


def check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = check_main(str(path))
    return code, capsys.readouterr().out.splitlines()


def test_unknown_capability_is_a_typo_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, 'routes = { catalgo = "kibo" }')

    assert check(path, capsys) == (
        2,
        [
            f"{path}:3: retailers.acme.routes.catalgo: unknown capability 'catalgo'"
            f" (did you mean 'catalog'?); capabilities: {KNOWN}"
        ],
    )


def test_adapter_that_does_not_provide_the_capability(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, '[retailers.acme.routes]\nreturns_sink = "optoro"')

    assert check(path, capsys) == (
        2,
        [
            f"{path}:{line_of(path, 'returns_sink =')}: retailers.acme.routes.returns_sink:"
            " adapter 'optoro' does not provide returns_sink; providers of returns_sink: 'kibo'"
        ],
    )


def test_adapter_not_configured_for_the_retailer_and_unknown_adapter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        """
        [retailers.acme.routes]
        catalog = "returnlogic"
        order_publisher = "shopify"
        """,
    )

    assert check(path, capsys) == (
        2,
        [
            f"{path}:{line_of(path, 'catalog =')}: retailers.acme.routes.catalog: adapter"
            " 'returnlogic' is not configured for this retailer (no"
            " [retailers.acme.returnlogic] table); providers of catalog: none",
            f"{path}:{line_of(path, 'order_publisher =')}: retailers.acme.routes.order_publisher:"
            " unknown adapter 'shopify'; installed adapters: kibo, optoro, returnlogic",
        ],
    )


def test_capability_the_adapter_config_disables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tables = PLATFORMS + RETURNLOGIC + "[retailers.acme.returnlogic.catalog]\nenabled = false\n"
    path = write(tmp_path, 'routes = { catalog = "returnlogic" }', tables)

    code, out = check(path, capsys)

    assert (code, len(out)) == (2, 1)
    assert out[0].startswith(f"{path}:3: retailers.acme.routes.catalog: adapter 'returnlogic'")
    assert "[retailers.acme.returnlogic] settings (is it disabled there?)" in out[0]


def test_valid_routes_pass_including_the_core_provider(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        """
        [retailers.acme.routes]
        catalog = "returnlogic"
        exchange_order_sink = "returnlogic"
        returns_sink = "kibo"
        order_publisher = "optoro"
        rma_lifecycle = "bridge"
        """,
        PLATFORMS + RETURNLOGIC,
    )

    assert check(path, capsys) == (0, ["acme: enabled, platforms optoro, kibo, returnlogic"])


def test_example_still_passes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(name, value)

    assert check(EXAMPLE, capsys)[0] == 0


def _no_setup(ctx: AdapterContext, retailer: RetailerConfig, config: BaseModel) -> None:
    """A table-only adapter: nothing to wire."""


class _Table(BaseModel):
    pass


def test_two_providers_and_no_route_must_be_chosen(tmp_path: Path) -> None:
    registry = AdapterRegistry(
        [
            AdapterSpec("one", _Table, _no_setup, capabilities=frozenset({"catalog"})),
            AdapterSpec("two", _Table, _no_setup, capabilities=frozenset({"catalog"})),
        ]
    )
    path = tmp_path / "bridge.toml"
    path.write_text("[retailers.acme.one]\n[retailers.acme.two]\n", encoding="utf-8")

    with pytest.raises(ConfigError) as info:
        load_config(path, env={}, registry=registry)
    assert info.value.problems == [
        f"{path}:1: retailers.acme.routes.catalog: several configured adapters provide this"
        " capability: route it to 'one' or 'two'"
    ]

    path.write_text(
        "[retailers.acme]\nroutes = { catalog = 'two' }\n[retailers.acme.one]\n"
        "[retailers.acme.two]\n",
        encoding="utf-8",
    )
    assert load_config(path, env={}, registry=registry).retailers["acme"].routes == {
        "catalog": "two"
    }


def test_registry_refuses_undeclared_names() -> None:
    with pytest.raises(ConfigError, match="unknown capabilities catalgo"):
        AdapterRegistry(
            [AdapterSpec("one", _Table, _no_setup, capabilities=frozenset({"catalgo"}))]
        )
    with pytest.raises(ConfigError, match="reserved for the core"):
        AdapterRegistry([AdapterSpec(CORE_PROVIDER, _Table, _no_setup)])


@pytest.mark.parametrize("disabled", [False, True])
def test_declarations_match_what_setup_really_provides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, disabled: bool
) -> None:
    """The static declarations ``check`` trusts are what each adapter's setup provides."""
    for name, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(name, value)
    config_path = EXAMPLE
    if disabled:
        text = EXAMPLE.read_text(encoding="utf-8")
        text = text.replace(
            'routes = { catalog = "returnlogic", exchange_order_sink = "returnlogic" }', ""
        )
        for table in ("catalog", "exchange_orders"):
            head, header, tail = text.partition(f"[retailers.acme.returnlogic.{table}]\n")
            text = head + header + tail.replace("enabled = true", "enabled = false", 1)
        config_path = tmp_path / "example.toml"
        config_path.write_text(text, encoding="utf-8")
    config = load_config(config_path)
    registry = load_registry()
    runtime = build_runtime(config, registry=registry)

    for rid, retailer in config.retailers.items():
        for name, platform_config in retailer.platforms.items():
            actual = {
                c
                for (r, c), providers in runtime.services.items()
                if r == rid and name in providers
            }
            assert actual == set(registry.get(name).provided(platform_config)), name
    returnlogic = {
        c for (_, c), providers in runtime.services.items() if "returnlogic" in providers
    }
    assert returnlogic == {"order_source"} | (
        set() if disabled else {"catalog", "exchange_order_sink"}
    )


def test_run_refuses_a_bad_route_at_load(tmp_path: Path) -> None:
    path = write(tmp_path, 'routes = { returns_sink = "optoro" }')

    done = subprocess.run(
        [sys.executable, "-m", "bridge", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "RETURNS_BRIDGE_TOKEN_KEY"},
        check=False,
    )

    assert done.returncode == 2
    assert f"{path}:3: retailers.acme.routes.returns_sink: adapter 'optoro'" in done.stderr
    assert not (tmp_path / "returns-bridge.db").exists()
