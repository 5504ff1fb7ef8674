"""Which platform podrun talks to, and with what settings.

Four sources, the first that has a setting wins:

1. explicit ``podrun.configure(...)`` arguments;
2. environment variables (``PODRUN_PLATFORM``, ``PODRUN_EM_URL``, ``PODRUN_LOCAL_DRIVER``, ...);
3. the selected context of the configuration file (``$PODRUN_CONFIG``, else
   ``$XDG_CONFIG_HOME/podrun/config.toml``, else ``~/.config/podrun/config.toml``);
4. defaults: the local platform, so a user with no account and no server runs the real
   protocol on their own machine.

The file holds named contexts, as flamepy's ``flame.yaml`` does::

    current-context = "cg2"

    [contexts.local]
    platform = "local"

    [contexts.cg2]
    platform = "em"
    url = "http://192.168.3.3"
    username = "client1"
    password-env = "CG2_PASSWORD"   # or password = "..." (keep the file private then)

The context is ``configure(context=...)`` (the CLI's ``--context``), else ``PODRUN_CONTEXT``,
else the file's ``current-context``. This module is also packed into the pod runtime, where it
is imported but never reads a file: TOML support is imported only when a file is read.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..platform.base import Platform
from ..platform.home import default_home
from ..platform.metered import MeteredPlatform

PLATFORMS = ("local", "em")
ENV_CONFIG, ENV_CONTEXT, ENV_PLATFORM = "PODRUN_CONFIG", "PODRUN_CONTEXT", "PODRUN_PLATFORM"
DEFAULT = "default"
EXPLICIT = "configure()"

_lock = threading.RLock()
_settings: dict[str, Any] = {}
_platform: MeteredPlatform | None = None


@dataclass(frozen=True)
class Setting:
    """One platform option: its name (the platform's keyword), the platform that takes it,
    the variable that overrides the file, and how a text value from that variable is read."""

    name: str
    platform: str
    env: str | None = None
    parse: Callable[[str], Any] = str
    secret: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting("url", "em", "PODRUN_EM_URL"),
    Setting("username", "em", "PODRUN_EM_USERNAME"),
    Setting("password", "em", "PODRUN_EM_PASSWORD", secret=True),
    Setting("max_uplink_bytes", "em", "PODRUN_EM_MAX_UPLINK_BYTES", int),
    Setting("timeout", "em", "PODRUN_EM_TIMEOUT", float),
    Setting("retry_deadline", "em", None, float),
    Setting("root", "local"),
    Setting("user", "local", "PODRUN_LOCAL_USER"),
    Setting("driver", "local", "PODRUN_LOCAL_DRIVER"),
    Setting("python", "local", "PODRUN_LOCAL_PYTHON"),
    Setting("max_uplink_bytes", "local", None, int),
)
# File keys besides the platform's options ('-' and '_' are interchangeable in the file).
FILE_KEYS = frozenset({"platform", "password_env"} | {s.name for s in SETTINGS})
REQUIRED = {"em": ("url", "username", "password")}


# --- the file ----------------------------------------------------------------------------------
def config_path() -> Path:
    """``$PODRUN_CONFIG``, else ``$XDG_CONFIG_HOME/podrun/config.toml``, else ``~/.config/...``."""
    if os.environ.get(ENV_CONFIG):
        return Path(os.environ[ENV_CONFIG]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "podrun" / "config.toml"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:  # 3.10: the backport (a dependency there)
        import tomli as tomllib  # type: ignore[no-redef,import-not-found,unused-ignore]
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def load_file(path: Path | None = None) -> dict[str, Any]:
    """The configuration file's contents; {} when the default file does not exist.

    A file named by ``PODRUN_CONFIG`` must exist: a typo there should not silently mean "local".
    """
    path = path or config_path()
    if not path.is_file():
        if os.environ.get(ENV_CONFIG):
            raise ConfigError(f"{ENV_CONFIG}={os.environ[ENV_CONFIG]} names no file")
        return {}
    data = _read_toml(path)
    contexts = data.get("contexts", {})
    if not isinstance(contexts, dict) or not all(isinstance(c, dict) for c in contexts.values()):
        raise ConfigError(f"{path}: 'contexts' must be tables, e.g. [contexts.local] platform = \"local\"")
    for name, table in contexts.items():
        unknown = sorted(k for k in table if k.replace("-", "_") not in FILE_KEYS)
        if unknown:
            known = ", ".join(sorted(k.replace("_", "-") for k in FILE_KEYS))
            raise ConfigError(f"{path}: [contexts.{name}] has unknown key(s) {', '.join(unknown)}; known keys: {known}")
    return data


def contexts(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The file's contexts, keys normalised to the platform's keyword spelling."""
    return {name: {k.replace("-", "_"): v for k, v in table.items()} for name, table in data.get("contexts", {}).items()}


# --- resolution --------------------------------------------------------------------------------
@dataclass
class Resolved:
    """The effective configuration: each value with where it came from (for ``config show``)."""

    platform: str
    context: str | None
    context_source: str
    path: Path
    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    secrets: frozenset[str] = frozenset()

    def options(self) -> dict[str, Any]:
        """Keyword arguments for the platform's constructor."""
        return {k: v for k, v in self.values.items() if k != "platform"}

    def shown(self, name: str) -> str:
        """A value as it may be printed: secrets never are."""
        value = self.values.get(name)
        if name in self.secrets:
            return "(not set)" if value is None else "***"
        return "(platform default)" if value is None else str(value)


def _pick_context(explicit: str | None, data: dict[str, Any], path: Path) -> tuple[str | None, str]:
    known = contexts(data)
    if explicit:
        name, source = explicit, "--context / configure(context=)"
    elif os.environ.get(ENV_CONTEXT):
        name, source = os.environ[ENV_CONTEXT], f"env {ENV_CONTEXT}"
    elif data.get("current-context"):
        name, source = str(data["current-context"]), f"current-context in {path}"
    else:
        return None, DEFAULT
    if name not in known:
        listing = f"known contexts: {', '.join(sorted(known))}" if known else f"{path} defines no [contexts.NAME] at all"
        raise ConfigError(f"unknown context {name!r} (from {source}); {listing}")
    return name, source


def resolve(options: dict[str, Any] | None = None, context: str | None = None, platform: str | None = None) -> Resolved:
    """Merge explicit options, the environment and the file's context into the platform's settings."""
    options = dict(options or {})
    path = config_path()
    data = load_file(path)
    name, context_source = _pick_context(context, data, path)
    table = contexts(data).get(name, {}) if name else {}
    where = f"{path} [contexts.{name}]"
    if platform:
        kind, kind_source = platform, EXPLICIT
    elif os.environ.get(ENV_PLATFORM):
        kind, kind_source = os.environ[ENV_PLATFORM], f"env {ENV_PLATFORM}"
    elif table.get("platform"):
        kind, kind_source = str(table["platform"]), where
    else:
        kind, kind_source = "local", DEFAULT
    if kind not in PLATFORMS:
        variable = ENV_PLATFORM if kind_source.startswith("env") else kind_source
        raise ConfigError(f"{variable}: {kind!r} is not a platform: choose one of {', '.join(PLATFORMS)}")
    resolved = Resolved(kind, name, context_source, path, {"platform": kind}, {"platform": kind_source},
                        frozenset(s.name for s in SETTINGS if s.secret))
    for setting in (s for s in SETTINGS if s.platform == kind):
        found = _lookup(setting, options, table, where)
        if found is not None:
            resolved.values[setting.name], resolved.sources[setting.name] = found
        else:
            resolved.sources[setting.name] = DEFAULT
    for key, value in options.items():  # anything else the platform takes (transport, backoff, ...)
        if key not in resolved.values and value is not None:
            resolved.values[key], resolved.sources[key] = value, EXPLICIT
    return resolved


def _lookup(setting: Setting, options: dict[str, Any], table: dict[str, Any], where: str) -> tuple[Any, str] | None:
    if options.get(setting.name) is not None:
        return options.pop(setting.name), EXPLICIT
    if setting.env and os.environ.get(setting.env):
        raw = os.environ[setting.env]
        try:
            return setting.parse(raw), f"env {setting.env}"
        except ValueError:
            raise ConfigError(f"{setting.env}={raw!r} is not a valid {setting.name}") from None
    if setting.name == "password" and table.get("password_env"):
        variable = str(table["password_env"])
        if os.environ.get(variable):
            return os.environ[variable], f"env {variable} (password-env in {where})"
        raise ConfigError(f"{where} takes its password from ${variable} (password-env), which is not set")
    if table.get(setting.name) is not None:
        return table[setting.name], where
    return None


# --- the process's platform ---------------------------------------------------------------------
def configure(platform: str | Platform | None = None, *, context: str | None = None, **options: Any) -> None:
    """Select the platform for subsequent calls.

    ``platform="local"`` (default; options ``root``, ``user``, ``driver``), ``"em"``
    (options ``url``, ``username``, ``password``, ...) or a ready ``Platform`` instance.
    ``context`` picks a context of the configuration file; explicit options override it and
    the environment. Calls already submitted keep the platform they were submitted on.
    """
    global _platform
    if isinstance(platform, str) and platform not in PLATFORMS:
        raise ConfigError(f"unknown platform {platform!r}: choose one of {', '.join(PLATFORMS)}, or pass a Platform")
    if context is not None:
        _pick_context(context, load_file(), config_path())  # an unknown context fails here, not at first use
    with _lock:
        _settings.clear()
        _settings["platform"] = platform
        _settings["context"] = context
        _settings.update(options)
        _platform = None


def home() -> Path:
    """podrun's local state (volumes of the local platform, manifests, caches, journal)."""
    return default_home()


def effective() -> Resolved:
    """The configuration the next platform would be built from (``podrun config show``)."""
    with _lock:
        choice = _settings.get("platform")
        options = {k: v for k, v in _settings.items() if k not in ("platform", "context")}
        return resolve(options, _settings.get("context"), choice if isinstance(choice, str) else None)


def _build() -> Platform:
    choice = _settings.get("platform")
    if isinstance(choice, Platform):
        return choice
    resolved = effective()
    for name in REQUIRED.get(resolved.platform, ()):
        if resolved.values.get(name) in (None, ""):
            setting = next(s for s in SETTINGS if s.platform == resolved.platform and s.name == name)
            raise ConfigError(
                f"the {resolved.platform} platform needs its {name}: put it in a context of {resolved.path} "
                f"({name.replace('_', '-')} = ...), set {setting.env}, "
                f"or podrun.configure(platform={resolved.platform!r}, {name}=...)")
    if resolved.platform == "em":
        from ..platform.em import EMPlatform

        return EMPlatform.from_settings(**resolved.options())
    from ..platform.local import LocalPlatform  # not in a pod's zipapp: pods never start pods

    return LocalPlatform(**resolved.options())


def current_platform() -> MeteredPlatform:
    """The configured platform, metered; built on first use."""
    global _platform
    with _lock:
        if _platform is None:
            _platform = MeteredPlatform(_build())
        return _platform


def reset() -> None:
    """Forget the configuration and close the platform's connections (tests and the CLI use it
    when they are done; calls still in flight on that platform then fail with a typed error)."""
    global _platform
    with _lock:
        _settings.clear()
        if _platform is not None:
            _platform.close()
        _platform = None
