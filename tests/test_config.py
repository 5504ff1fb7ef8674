"""Configuration contexts: the file, PODRUN_CONTEXT, and precedence (configure > env > file > default)."""

from __future__ import annotations

from pathlib import Path

import pytest

import podrun
from podrun.client import config
from podrun.platform.local import LocalPlatform

from .platforms import shared_emulator


def write_config(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "podrun.toml"
    path.write_text(text)
    monkeypatch.setenv("PODRUN_CONFIG", str(path))
    return path


TWO_CONTEXTS = """
current-context = "mine"

[contexts.mine]
platform = "local"
root = "{root}"
user = "alice"

[contexts.sat]
platform = "em"
url = "http://file.example:8000"
username = "client1"
password-env = "SAT_PASSWORD"
max-uplink-bytes = 5000000
"""


def test_without_a_file_the_default_is_the_local_platform():
    resolved = config.effective()
    assert resolved.platform == "local" and resolved.context is None
    assert resolved.sources["platform"] == config.DEFAULT
    assert isinstance(config.current_platform().inner, LocalPlatform)


def test_xdg_config_home_is_where_the_file_is_found(tmp_path, monkeypatch):
    xdg = tmp_path / "xdg"
    (xdg / "podrun").mkdir(parents=True)
    (xdg / "podrun" / "config.toml").write_text('current-context = "x"\n[contexts.x]\nplatform = "local"\nuser = "xdg-user"\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    assert config.config_path() == xdg / "podrun" / "config.toml"
    platform = config.current_platform().inner
    assert isinstance(platform, LocalPlatform) and platform.user == "xdg-user"


def test_current_context_builds_its_platform(tmp_path, monkeypatch):
    write_config(tmp_path, TWO_CONTEXTS.format(root=tmp_path / "vols"), monkeypatch)
    platform = config.current_platform().inner
    assert isinstance(platform, LocalPlatform)
    assert (platform.root, platform.user) == (tmp_path / "vols", "alice")
    resolved = config.effective()
    assert resolved.context == "mine" and "current-context" in resolved.context_source
    assert resolved.sources["user"].endswith("[contexts.mine]")


def test_podrun_context_and_configure_context_select(tmp_path, monkeypatch):
    write_config(tmp_path, TWO_CONTEXTS.format(root=tmp_path / "vols"), monkeypatch)
    monkeypatch.setenv("PODRUN_CONTEXT", "sat")
    monkeypatch.setenv("SAT_PASSWORD", "s3cret")
    resolved = config.effective()
    assert (resolved.context, resolved.platform) == ("sat", "em")
    assert resolved.values["password"] == "s3cret" and "SAT_PASSWORD" in resolved.sources["password"]
    assert resolved.shown("password") == "***"
    assert resolved.values["max_uplink_bytes"] == 5_000_000
    podrun.configure(context="mine")  # explicit beats PODRUN_CONTEXT
    assert config.effective().context == "mine"


def test_environment_overrides_the_file_and_configure_overrides_both(tmp_path, monkeypatch):
    write_config(tmp_path, TWO_CONTEXTS.format(root=tmp_path / "vols"), monkeypatch)
    monkeypatch.setenv("PODRUN_CONTEXT", "sat")
    monkeypatch.setenv("SAT_PASSWORD", "pw")
    monkeypatch.setenv("PODRUN_EM_URL", "http://env.example:9000")
    monkeypatch.setenv("PODRUN_EM_TIMEOUT", "7.5")
    resolved = config.effective()
    assert resolved.values["url"] == "http://env.example:9000" and resolved.sources["url"] == "env PODRUN_EM_URL"
    assert resolved.values["timeout"] == 7.5
    assert resolved.values["username"] == "client1"  # not overridden: still the file's
    podrun.configure(url="http://explicit.example", context="sat")
    resolved = config.effective()
    assert resolved.values["url"] == "http://explicit.example" and resolved.sources["url"] == config.EXPLICIT
    # PODRUN_PLATFORM overrides the context's platform; the em keys then do not apply.
    monkeypatch.setenv("PODRUN_PLATFORM", "local")
    config.reset()
    resolved = config.effective()
    assert resolved.platform == "local" and "url" not in resolved.values


def test_a_context_reaches_the_em_emulator(tmp_path, monkeypatch, request):
    server = shared_emulator(request)
    user, password = server.add_user("cfg")
    write_config(tmp_path, f'current-context = "em"\n[contexts.em]\nplatform = "em"\nurl = "{server.url}"\n'
                           f'username = "{user}"\npassword = "{password}"\n', monkeypatch)
    platform = config.current_platform()
    assert platform.kind == "em" and platform.identity() == f"em:{server.url}:{user}"
    platform.uplink([("hello.txt", b"over http")], dest_path="cfg")
    assert platform.downlink("cfg/hello.txt") == b"over http"
    for name in platform.pvc_list():
        platform.pvc_delete(name)


def test_clear_errors(tmp_path, monkeypatch):
    write_config(tmp_path, TWO_CONTEXTS.format(root=tmp_path / "vols"), monkeypatch)
    with pytest.raises(podrun.ConfigError, match="unknown context 'nope'.*known contexts: mine, sat"):
        podrun.configure(context="nope")
    monkeypatch.setenv("PODRUN_CONTEXT", "sat")
    with pytest.raises(podrun.ConfigError, match=r"\$SAT_PASSWORD \(password-env\), which is not set"):
        config.current_platform()
    (tmp_path / "podrun.toml").write_text('[contexts.x]\nplatform = "local"\ncolour = "blue"\n')
    with pytest.raises(podrun.ConfigError, match="unknown key.*colour"):
        config.effective()
    (tmp_path / "podrun.toml").write_text("this is = = not toml")
    with pytest.raises(podrun.ConfigError, match="not valid TOML"):
        config.effective()
    monkeypatch.setenv("PODRUN_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(podrun.ConfigError, match="names no file"):
        config.effective()
    monkeypatch.delenv("PODRUN_CONFIG")
    monkeypatch.delenv("PODRUN_CONTEXT")
    monkeypatch.setenv("PODRUN_PLATFORM", "em")
    with pytest.raises(podrun.ConfigError, match="needs its url.*PODRUN_EM_URL"):
        config.current_platform()
