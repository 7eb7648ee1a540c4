"""Configuration: the declared table, the loader's errors and the CLI around them."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import ConfigError, DirectoryConfig, GatewayConfig, parse_config
from gateway.config.render import render_defaults
from gateway.config.types import HostPort


@pytest.mark.parametrize("cls", [GatewayConfig, DirectoryConfig])
def test_rendered_defaults_load_back_to_the_defaults(cls: type) -> None:
    assert parse_config(cls, tomllib.loads(render_defaults(cls))) == cls()


def test_values_are_typed() -> None:
    cfg = parse_config(GatewayConfig, {
        "smtp": {"listen": "[::1]:25", "max_message_size": "10MB",
                 "trusted_networks": ["10.0.0.0/8"], "command_timeout": "5m"},
        "delivery": {"transport": {"Beta.Test": "127.0.0.1:2526"}},
    })
    assert cfg.smtp.listen == HostPort("::1", 25)
    assert cfg.smtp.max_message_size == 10 * 1024 * 1024
    assert cfg.smtp.command_timeout == 300.0
    assert str(cfg.smtp.trusted_networks[0]) == "10.0.0.0/8"
    assert cfg.delivery.transport == (("beta.test", HostPort("127.0.0.1", 2526)),)


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        ({"smtp": {"listen": "nope"}}, "smtp.listen", "HOST:PORT"),
        ({"smtp": {"listen": "h:70000"}}, "smtp.listen", "outside"),
        ({"smtp": {"max_recipients": 0}}, "smtp.max_recipients", "at least 1"),
        ({"smtp": {"max_recipients": "5"}}, "smtp.max_recipients", "integer"),
        ({"smtp": {"max_recipients": True}}, "smtp.max_recipients", "integer"),
        ({"smtp": {"bogus": 1}}, "smtp.bogus", "unknown setting"),
        ({"smpt": {}}, "smpt", "unknown section"),
        ({"smtp": 3}, "smtp", "table"),
        ({"delivery": {"tls": "maybe"}}, "delivery.tls", "one of"),
        ({"smtp": {"trusted_networks": ["10.0.0.0/33"]}}, "smtp.trusted_networks", "item 0"),
        ({"spool": {"group_commit_window": "soon"}}, "spool.group_commit_window", "duration"),
    ],
)
def test_errors_name_the_key(data: dict[str, object], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(GatewayConfig, data)
    assert info.value.key == key
    assert words in str(info.value)


def test_override_from_flags() -> None:
    cfg = parse_config(GatewayConfig, {}, overrides={"smtp.listen": "127.0.0.1:2600"})
    assert cfg.smtp.listen.port == 2600
    with pytest.raises(ConfigError, match=r"smtp\.nope"):
        parse_config(GatewayConfig, {}, overrides={"smtp.nope": 1})


def test_check_config_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[smtp]\nlocal_domains = ["alpha.test"]\n')
    assert main(["check-config", str(good)]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[smtp\n")
    assert main(["check-config", str(bad)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert main(["check-config", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_defaults_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--defaults", "--directory"]) == 0
    assert tomllib.loads(capsys.readouterr().out)["server"]["listen"] == "127.0.0.1:8780"


@pytest.mark.parametrize(("name", "cls"), [("gateway", GatewayConfig),
                                           ("directory", DirectoryConfig)])
def test_deploy_examples_are_the_table(name: str, cls: type) -> None:
    """deploy/*.example.toml are made from the settings table; regenerate them with
    `smimegate config --defaults [--directory] > deploy/NAME.example.toml`."""
    example = Path(__file__).parent.parent / "deploy" / f"{name}.example.toml"
    assert example.read_text() == render_defaults(cls)
