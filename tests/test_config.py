"""The configuration loader: valid files, includes, every kind of error with its line, secrets."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr, ValidationError, field_validator

from adapters.kibo.config import KiboConfig
from adapters.optoro.config import OptoroConfig
from adapters.returnlogic.config import ReturnLogicConfig
from bridge.config import (
    AppConfig,
    RetailerConfig,
    ServerConfig,
    StoreConfig,
    _scan_lines,
    check_main,
    load_config,
    summarize,
)
from bridge.configbase import ConfigModel
from bridge.errors import ConfigError
from bridge.ports import AdapterContext, AdapterSpec
from bridge.registry import AdapterRegistry, load_registry

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"
EXAMPLE_ENV = {
    "ACME_OPTORO_CLIENT_SECRET": "optoro-client-secret-value",
    "ACME_OPTORO_WEBHOOK_PASSWORD": "optoro-webhook-password-value",
    "ACME_RETURNLOGIC_CLIENT_SECRET": "returnlogic-client-secret-value",
    "ACME_KIBO_TOKEN": "kibo-token-value",
    "ACME_KIBO_NOTIFY_SECRET": "kibo-notify-value",
}
KIBO_TOKEN = "kibo-token-value"
ENV = {"KIBO_TOKEN": KIBO_TOKEN}
KIBO_RETAILER = """
[retailers.{rid}.kibo]
base_url = "https://kibo.test"
token = "${{KIBO_TOKEN}}"
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def problems(path: Path, env: dict[str, str] | None = None, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env=ENV if env is None else env, **kwargs)
    assert info.value.problems, "a ConfigError from load_config always lists its problems"
    return info.value.problems


def line_containing(path: Path, needle: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(n for n, line in enumerate(lines, 1) if needle in line)


# --- the example file -----------------------------------------------------------------------


def test_example_is_valid() -> None:
    config = load_config(EXAMPLE, env=EXAMPLE_ENV)

    assert config.server == ServerConfig()
    assert config.store == StoreConfig()
    assert config.source_files == [EXAMPLE]
    acme = config.retailers["acme"]
    assert (acme.id, acme.name, acme.enabled) == ("acme", "Acme Outfitters", True)
    optoro = acme.platform("optoro", OptoroConfig)
    assert optoro.client_secret.get_secret_value() == "optoro-client-secret-value"
    assert optoro.inbound_auth.kind == "basic"
    rl = acme.platform("returnlogic", ReturnLogicConfig)
    assert rl.client_secret is not None
    assert rl.client_secret.get_secret_value() == "returnlogic-client-secret-value"
    kibo = acme.platform("kibo", KiboConfig)
    assert kibo.token is not None
    assert kibo.token.get_secret_value() == "kibo-token-value"
    assert summarize(config) == ["acme: enabled, platforms optoro, returnlogic, kibo"]


def _field_names(model: type[BaseModel]) -> set[str]:
    names = set(model.model_fields)
    for info in model.model_fields.values():
        for arg in [info.annotation, *getattr(info.annotation, "__args__", ())]:
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                names |= _field_names(arg)
    return names


@pytest.mark.parametrize(
    "model",
    [ServerConfig, StoreConfig, RetailerConfig, OptoroConfig, ReturnLogicConfig, KiboConfig],
)
def test_example_documents_every_key(model: type[BaseModel]) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    undocumented = {
        name
        for name in _field_names(model) - {"id", "platforms"}
        if not re.search(rf"^(#\s*)?({name} = |\[.*\.{name}\]$)", text, re.MULTILINE)
    }
    assert not undocumented
    for match in re.finditer(r"^(?!#)(\w+) = ", text, re.MULTILINE):
        before = text[: match.start()].splitlines()
        assert before[-1].startswith("#") or before[-2].startswith("#"), match.group(1)


def test_example_without_env_names_every_variable() -> None:
    expected = []
    for key, var in [
        ("optoro.client_secret", "ACME_OPTORO_CLIENT_SECRET"),
        ("optoro.inbound_auth.password", "ACME_OPTORO_WEBHOOK_PASSWORD"),
        ("returnlogic.client_secret", "ACME_RETURNLOGIC_CLIENT_SECRET"),
        ("kibo.token", "ACME_KIBO_TOKEN"),
        ("kibo.notifications.key", "ACME_KIBO_NOTIFY_SECRET"),
    ]:
        line = line_containing(EXAMPLE, f'{key.rpartition(".")[2]} = "${{{var}}}"')
        expected.append(
            f"{EXAMPLE}:{line}: retailers.acme.{key}: environment variable {var} is not set"
        )

    assert problems(EXAMPLE, env={}) == expected


def test_check_main_on_example(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(name, value)

    assert check_main(str(EXAMPLE)) == 0
    assert capsys.readouterr().out == "acme: enabled, platforms optoro, returnlogic, kibo\n"


def test_check_main_prints_every_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KIBO_TOKEN", raising=False)
    path = write(
        tmp_path / "bridge.toml",
        """
        [server]
        port = "eighty"
        """
        + KIBO_RETAILER.format(rid="acme"),
    )

    assert check_main(str(path)) == 2
    assert capsys.readouterr().out.splitlines() == [
        f"{path}:2: server.port: must be a valid integer, unable to parse string as an integer",
        f"{path}:6: retailers.acme.kibo.token: environment variable KIBO_TOKEN is not set",
    ]


def test_check_main_without_retailers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "empty.toml", "")

    assert check_main(str(path)) == 0
    assert capsys.readouterr().out == "no retailers configured\n"


# --- loading files --------------------------------------------------------------------------


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "empty.toml", ""), env={})

    assert config == AppConfig(source_files=[tmp_path / "empty.toml"])
    assert config.store.sqlite_path == Path("returns-bridge.db")


def test_directory_loads_every_toml_file_sorted(tmp_path: Path) -> None:
    write(tmp_path / "b-beta.toml", KIBO_RETAILER.format(rid="beta"))
    write(tmp_path / "a-acme.toml", KIBO_RETAILER.format(rid="acme"))
    write(tmp_path / "server.toml", "[server]\nport = 9000\n")
    write(tmp_path / "notes.txt", "not toml")
    write(tmp_path / "nested" / "ignored.toml", "[server]\nport = 1\n")

    config = load_config(tmp_path, env=ENV)

    assert list(config.retailers) == ["acme", "beta"]
    assert config.server.port == 9000
    assert config.source_files == [
        tmp_path / "a-acme.toml",
        tmp_path / "b-beta.toml",
        tmp_path / "server.toml",
    ]


def test_includes_are_relative_to_the_including_file(tmp_path: Path) -> None:
    main = write(
        tmp_path / "conf" / "main.toml",
        """
        include = ["retailers/*.toml", "shared/server.toml"]
        """,
    )
    write(tmp_path / "conf" / "retailers" / "beta.toml", KIBO_RETAILER.format(rid="beta"))
    write(
        tmp_path / "conf" / "retailers" / "acme.toml",
        'include = ["../shared/store.toml"]\n' + KIBO_RETAILER.format(rid="acme"),
    )
    write(tmp_path / "conf" / "shared" / "server.toml", "[server]\nport = 9001\n")
    write(tmp_path / "conf" / "shared" / "store.toml", '[store]\nurl = "sqlite:///x.db"\n')

    config = load_config(main, env=ENV)

    assert list(config.retailers) == ["acme", "beta"]
    assert config.server.port == 9001
    assert config.store.url == "sqlite:///x.db"
    conf = tmp_path / "conf"
    assert config.source_files == [
        main,
        conf / "retailers" / "acme.toml",
        conf / "shared" / "store.toml",
        conf / "retailers" / "beta.toml",
        conf / "shared" / "server.toml",
    ]


def test_include_of_a_directory_and_a_shared_file_loads_it_once(tmp_path: Path) -> None:
    main = write(tmp_path / "main.toml", 'include = ["retailers", "common.toml"]\n')
    write(tmp_path / "retailers" / "acme.toml", 'include = ["../common.toml"]\n')
    write(tmp_path / "common.toml", KIBO_RETAILER.format(rid="acme"))

    config = load_config(main, env=ENV)

    assert list(config.retailers) == ["acme"]
    assert len(config.source_files) == 3


def test_glob_matching_nothing_is_fine_and_never_includes_the_file_itself(
    tmp_path: Path,
) -> None:
    main = write(tmp_path / "main.toml", 'include = ["*.toml", "retailers/*.toml"]\n')

    assert load_config(main, env={}).source_files == [main]


def test_missing_include(tmp_path: Path) -> None:
    main = write(
        tmp_path / "main.toml",
        """
        include = [
            "retailers/*.toml",
            "missing.toml",
        ]
        """,
    )

    assert problems(main) == [f"{main}:3: include[1]: no such file: {tmp_path}/missing.toml"]


def test_include_cycle(tmp_path: Path) -> None:
    a = write(tmp_path / "a.toml", 'include = ["b.toml"]\n')
    b = write(tmp_path / "b.toml", '# b\ninclude = ["a.toml"]\n')

    assert problems(a) == [f"{b}:2: include[0]: include cycle: {a} -> {b} -> {tmp_path}/a.toml"]


def test_include_must_be_an_array_of_strings(tmp_path: Path) -> None:
    one = write(tmp_path / "one.toml", 'include = "b.toml"\n')
    two = write(tmp_path / "two.toml", 'include = ["b.toml", 3]\n')
    write(tmp_path / "b.toml", "")

    assert problems(one) == [f"{one}:1: include: must be an array of file names or glob patterns"]
    assert problems(two) == [f"{two}:1: include[1]: must be a string"]


def test_missing_path(tmp_path: Path) -> None:
    assert problems(tmp_path / "nope.toml") == [
        f"{tmp_path}/nope.toml: cannot read: No such file or directory"
    ]


def test_empty_directory(tmp_path: Path) -> None:
    assert problems(tmp_path) == [f"{tmp_path}: no *.toml files in this directory"]


# --- each kind of error, with its line ------------------------------------------------------


def test_toml_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.toml", "[server]\nport = \n")

    assert problems(path) == [f"{path}:2: Invalid value (column 8)"]


def test_syntax_error_in_one_file_does_not_hide_problems_in_another(tmp_path: Path) -> None:
    write(tmp_path / "a.toml", "[server\n")
    write(tmp_path / "b.toml", "[server]\nprot = 1\n")

    assert problems(tmp_path) == [
        f"{tmp_path}/a.toml:1: Expected ']' at the end of a table declaration (column 8)",
        f"{tmp_path}/b.toml:2: server.prot: unknown key",
    ]


def test_missing_key_points_at_its_table(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bridge.toml",
        """
        # comment
        [retailers.acme]
        name = "Acme"

        [retailers.acme.optoro]
        base_url = "https://optoro.test"
        client_id = "id"
        optiturn_id = "acme"
        inbound_auth = { kind = "basic", username = "u", password = "p" }
        """,
    )

    assert problems(path) == [
        f"{path}:5: retailers.acme.optoro.client_secret: missing required key"
    ]


def test_wrong_types(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bridge.toml",
        """
        [server]
        port = "eighty"
        shutdown_timeout = [1]

        [retailers.acme]
        enabled = "sometimes"
        kibo = 3
        """,
    )

    assert problems(path) == [
        f"{path}:2: server.port: must be a valid integer, unable to parse string as an integer",
        f"{path}:3: server.shutdown_timeout: must be a valid number",
        f"{path}:6: retailers.acme.enabled: must be a valid boolean, unable to interpret input",
        f"{path}:7: retailers.acme.kibo: must be a table",
    ]


def test_constraint_violations(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bridge.toml",
        """
        [server]
        port = 70000
        [store]
        url = "mysql://db"
        """,
    )

    assert problems(path) == [
        f"{path}:2: server.port: must be less than or equal to 65535",
        f"{path}:4: store.url: must start with sqlite:/// or postgresql://",
    ]


def test_unknown_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bridge.toml",
        """
        retailer = "acme"
        [server]
        prot = 8080
        [retailers.acme]
        enabeld = true
        [retailers.acme.kibo]
        base_url = "https://kibo.test"
        token = "${KIBO_TOKEN}"
        tokn = "x"
        """,
    )

    assert problems(path) == [
        f"{path}:1: retailer: unknown key; top-level keys are include, server, store, retailers",
        f"{path}:3: server.prot: unknown key",
        f"{path}:5: retailers.acme.enabeld: unknown key",
        f"{path}:9: retailers.acme.kibo.tokn: unknown key",
    ]


def test_unknown_platform_table_lists_installed_adapters(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bridge.toml",
        """
        [retailers.acme]
        name = "Acme"
        [retailers.acme.shopify]
        shop = "acme"
        """,
    )

    assert problems(path) == [
        f"{path}:3: retailers.acme.shopify: unknown platform 'shopify'; "
        "installed adapters: kibo, optoro, returnlogic"
    ]


def test_missing_env_var_names_the_variable(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bridge.toml",
        """
        [retailers.acme.kibo]
        base_url = "https://${KIBO_HOST}/api"
        token = "${KIBO_TOKEN}"
        """,
    )

    assert problems(path, env={"KIBO_TOKEN": KIBO_TOKEN}) == [
        f"{path}:2: retailers.acme.kibo.base_url: environment variable KIBO_HOST is not set"
    ]


def test_env_substitution_inside_strings_and_escape(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bridge.toml",
        """
        [server]
        host = "${HOST}"
        port = "${PORT}"
        [retailers.acme]
        name = "Acme $${not a var} ${REGION}"
        """,
    )

    config = load_config(path, env={"HOST": "0.0.0.0", "PORT": "9100", "REGION": "EU"})

    assert (config.server.host, config.server.port) == ("0.0.0.0", 9100)
    assert config.retailers["acme"].name == "Acme ${not a var} EU"


def test_malformed_env_reference(tmp_path: Path) -> None:
    path = write(tmp_path / "bridge.toml", '[server]\nhost = "${HOST"\n')

    assert problems(path) == [
        f"{path}:2: server.host: malformed ${{...}} reference; write $${{ for a literal ${{"
    ]


def test_duplicate_retailer_names_both_files(tmp_path: Path) -> None:
    write(tmp_path / "a.toml", KIBO_RETAILER.format(rid="acme"))
    write(tmp_path / "b.toml", "# b\n[retailers.beta]\n[retailers.acme]\nname = 'again'\n")

    assert problems(tmp_path) == [
        f"{tmp_path}/b.toml:3: retailers.acme: retailer 'acme' is already defined at "
        f"{tmp_path}/a.toml:1"
    ]


def test_server_and_store_may_be_defined_once(tmp_path: Path) -> None:
    write(tmp_path / "a.toml", "[server]\nport = 1\n")
    write(tmp_path / "b.toml", "[store]\n[server]\nport = 2\n")

    assert problems(tmp_path) == [
        f"{tmp_path}/b.toml:2: server: [server] is already defined at {tmp_path}/a.toml:1"
    ]


def test_retailer_shapes(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bridge.toml",
        """
        [retailers]
        flat = 3
        [retailers."acme.eu"]
        name = "Acme EU"
        """,
    )

    assert problems(path) == [
        f"{path}:2: retailers.flat: must be a table",
        f"{path}:3: retailers.\"acme.eu\": retailer id must be letters, digits, '-' or '_'",
    ]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    main = write(
        tmp_path / "main.toml",
        """
        include = ["acme.toml"]

        [server]
        port = -1
        host = ""
        """,
    )
    acme = write(
        tmp_path / "acme.toml",
        """
        [retailers.acme.optoro]
        base_url = "not a url"
        client_id = "id"
        client_secret = "${OPTORO_SECRET}"
        optiturn_id = "acme"
        batch_size = 0
        inbound_auth.kind = "basic"
        inbound_auth.username = "optoro"

        [retailers.acme.returnlogic]
        base_url = "https://rl.test"
        team_id = "t"

        [retailers.acme.kibo]
        base_url = "https://kibo.test"
        auth = "basic"
        username = "u"
        """,
    )

    assert problems(main, env={}) == [
        f"{main}:4: server.port: must be greater than or equal to 0",
        f"{main}:5: server.host: String should have at least 1 character",
        f"{acme}:2: retailers.acme.optoro.base_url: "
        "must be a valid URL, relative URL without a base",
        f"{acme}:4: retailers.acme.optoro.client_secret: "
        "environment variable OPTORO_SECRET is not set",
        f"{acme}:6: retailers.acme.optoro.batch_size: must be greater than or equal to 1",
        f"{acme}:7: retailers.acme.optoro.inbound_auth.password: missing required key",
        f"{acme}:10: retailers.acme.returnlogic: "
        "set static_token, or client_id and client_secret for OAuth",
        f'{acme}:14: retailers.acme.kibo: auth = "basic" needs username and password',
    ]


def test_union_tag_errors_point_at_the_tag(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bridge.toml",
        """
        [retailers.acme.optoro]
        base_url = "https://optoro.test"
        client_id = "id"
        client_secret = "s"
        optiturn_id = "acme"

        [retailers.acme.optoro.inbound_auth]
        username = "u"

        [retailers.beta.optoro]
        base_url = "https://optoro.test"
        client_id = "id"
        client_secret = "s"
        optiturn_id = "beta"
        inbound_auth = { kind = "token", username = "u" }
        """,
    )

    assert problems(path) == [
        f"{path}:7: retailers.acme.optoro.inbound_auth.kind: missing required key",
        f"{path}:15: retailers.beta.optoro.inbound_auth.kind: must be one of 'basic',"
        " 'api_key', 'bearer', 'aws_sigv4', 'oauth2'",  # the last two: refused with the reason
    ]


def test_store_url_must_not_hold_a_password(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bridge.toml",
        """
        [store]
        url = "postgresql://bridge:${DB_PASSWORD}@db.internal/bridge"
        """,
    )

    found = problems(path, env={"DB_PASSWORD": "hunter2-db-password"})

    assert found == [
        f"{path}:2: store.url: must not contain a password; set [store] password instead"
    ]


def test_postgres_store_with_password(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bridge.toml",
        """
        [store]
        url = "postgresql://bridge@db.internal:5432/bridge"
        password = "${DB_PASSWORD}"
        """,
    )

    store = load_config(path, env={"DB_PASSWORD": "hunter2-db-password"}).store

    assert store.sqlite_path is None
    assert store.password == SecretStr("hunter2-db-password")


# --- line numbers for unusual TOML shapes ---------------------------------------------------


def test_lines_survive_multiline_strings_comments_and_dotted_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bridge.toml",
        '''
        [retailers.acme] # a comment with [brackets] and key = "value"
        name = """
        [retailers.fake]
        port = 1
        """
        "kibo".'base_url' = "https://kibo.test"
        kibo.token = "${KIBO_TOKEN}"
        kibo.extra = [
          1,
          { a = 2 },
        ]
        ''',
    )

    assert problems(path) == [f"{path}:8: retailers.acme.kibo.extra: unknown key"]


def test_arrays_of_tables_get_their_own_lines() -> None:
    lines = _scan_lines(
        textwrap.dedent(
            """\
            [[routes]]
            name = "a"
            [[routes]]
            name = "b"
            [routes.policy]
            at = "received"
            items = [
              "x",
              'y',
            ]
            """
        )
    )

    assert lines.line_of(("routes", 0, "name")) == 2
    assert lines.line_of(("routes", 1, "name")) == 4
    assert lines.line_of(("routes", 1, "policy", "at")) == 6
    assert lines.line_of(("routes", 1, "policy", "missing")) == 5
    assert lines.line_of(("routes", 1, "policy", "items", 1)) == 9
    assert lines.line_of(("nowhere",)) == 1


# --- secrets --------------------------------------------------------------------------------


def _no_setup(ctx: AdapterContext, retailer: RetailerConfig, config: BaseModel) -> None:
    """A table-only adapter: nothing to wire."""


class _EchoConfig(ConfigModel):
    """A careless adapter whose validator echoes its input."""

    secret: SecretStr
    note: str

    @field_validator("note")
    @classmethod
    def _echo(cls, value: str) -> str:
        raise ValueError(f"cannot use {value!r}")


def test_secrets_never_appear_in_errors_summaries_or_reprs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "s3cr3t-value-never-shown"
    registry = AdapterRegistry(
        [*load_registry().specs(), AdapterSpec("echo", _EchoConfig, _no_setup)]
    )
    good = write(
        tmp_path / "good.toml",
        """
        [retailers.acme.kibo]
        base_url = "https://kibo.test"
        token = "${SECRET}"
        [retailers.acme.returnlogic]
        base_url = "https://rl.test"
        team_id = "t"
        static_token = "prefix-${SECRET}"
        """,
    )
    bad = write(
        tmp_path / "bad.toml",
        """
        [server]
        port = "${SECRET}"
        [retailers.acme.echo]
        secret = "${SECRET}"
        note = "${SECRET}"
        [retailers.acme.kibo]
        base_url = "https://kibo.test"
        token = ["${SECRET}"]
        """,
    )

    config = load_config(good, env={"SECRET": secret}, registry=registry)
    with pytest.raises(ConfigError) as info:
        load_config(bad, env={"SECRET": secret}, registry=registry)
    monkeypatch.setenv("SECRET", secret)
    check_main(str(bad))
    check_main(str(good))

    assert info.value.problems == [
        f"{bad}:2: server.port: must be a valid integer, unable to parse string as an integer",
        f"{bad}:5: retailers.acme.echo.note: cannot use '***'",
        f"{bad}:8: retailers.acme.kibo.token: must be a valid string",
    ]
    shown = [str(info.value), repr(config), str(config), *summarize(config), capsys.readouterr()]
    assert all(secret not in str(text) for text in shown)


# --- the models -----------------------------------------------------------------------------


def test_config_is_frozen_and_platforms_are_typed(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "b.toml", KIBO_RETAILER.format(rid="acme")), env=ENV)
    acme = config.retailers["acme"]

    with pytest.raises(ValidationError):
        config.server.port = 1  # type: ignore[misc]
    assert isinstance(acme.platform("kibo"), KiboConfig)
    with pytest.raises(KeyError, match=r"\[retailers\.acme\.optoro\]"):
        acme.platform("optoro")
    with pytest.raises(TypeError, match="KiboConfig, not OptoroConfig"):
        acme.platform("kibo", OptoroConfig)
    assert acme.model_dump()["platforms"]["kibo"]["auth"] == "bearer"


def test_disabled_retailer_without_platforms(tmp_path: Path) -> None:
    path = write(tmp_path / "b.toml", "[retailers.acme]\nenabled = false\n")

    assert summarize(load_config(path, env={})) == ["acme: disabled, platforms none"]
