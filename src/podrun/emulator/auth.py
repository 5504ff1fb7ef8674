"""Users and tokens of the emulator, as the EM backend's SimpleJWT does them: signed JWTs
that expire (access and refresh), checked on every ``/em/*`` call."""

from __future__ import annotations

import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import jwt

USER_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # what LocalPlatform accepts as a user name
ALGORITHM = "HS256"


def parse_user(spec: str) -> tuple[str, str]:
    """``NAME:PASSWORD`` → (name, password); ValueError that says what is wrong."""
    name, sep, password = spec.partition(":")
    name = name.strip()
    if not sep or not password:
        raise ValueError(f"user {name or spec!r}: write it as NAME:PASSWORD")
    if not USER_RE.match(name):
        raise ValueError(f"user name {name!r}: use lowercase letters, digits, '-' and '_' (at most 63)")
    return name, password


def parse_users(text: str, *, strict: bool) -> dict[str, str]:
    """``NAME:PASSWORD`` entries, one a line (``#`` comments). ``strict``: a bad entry is a
    ValueError; otherwise it is skipped, so that one bad line never locks everybody out."""
    users: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            try:
                name, password = parse_user(line)
            except ValueError:
                if strict:
                    raise
                continue
            users[name] = password
    return users


@dataclass
class UserStore:
    """Fixed users (from the environment, never from argv) plus an optional users file
    (``NAME:PASSWORD`` lines, ``#`` comments), re-read when it changes, so users can be added
    without a restart."""

    fixed: dict[str, str] = field(default_factory=dict)
    users_file: Path | None = None
    _from_file: dict[str, str] = field(default_factory=dict)
    _stamp: tuple[int, int] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _reload(self) -> None:
        if self.users_file is None:
            return
        try:
            stat = self.users_file.stat()
        except FileNotFoundError:
            self._from_file, self._stamp = {}, None
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        self._from_file, self._stamp = parse_users(self.users_file.read_text(), strict=False), stamp

    def check(self, name: str, password: str) -> bool:
        with self._lock:
            self._reload()
            expected = self.fixed.get(name, self._from_file.get(name))
        return expected is not None and hmac.compare_digest(expected.encode(), password.encode())

    def exists(self, name: str) -> bool:
        with self._lock:
            self._reload()
            return name in self.fixed or name in self._from_file


class TokenError(Exception):
    """A token is missing, malformed, of the wrong type, or expired."""


@dataclass
class Tokens:
    """Issues and verifies signed tokens; ``access_lifetime`` seconds (SimpleJWT's default is 5 minutes)."""

    access_lifetime: float = 300.0
    refresh_lifetime: float = 86400.0
    secret: str = field(default_factory=lambda: secrets.token_hex(32))

    def _issue(self, user: str, kind: str, lifetime: float) -> str:
        now = time.time()
        claims = {"sub": user, "token_type": kind, "iat": int(now), "exp": now + lifetime, "jti": secrets.token_hex(8)}
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM)

    def pair(self, user: str) -> dict[str, str]:
        return {"refresh": self._issue(user, "refresh", self.refresh_lifetime),
                "access": self._issue(user, "access", self.access_lifetime)}

    def access(self, user: str) -> str:
        return self._issue(user, "access", self.access_lifetime)

    def verify(self, token: str, kind: str) -> str:
        """The user a valid token of ``kind`` names; TokenError otherwise."""
        try:
            claims = jwt.decode(token, self.secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]})
        except jwt.ExpiredSignatureError:
            raise TokenError("Token is invalid or expired") from None
        except jwt.InvalidTokenError:
            raise TokenError("Given token not valid for any token type") from None
        if claims.get("token_type") != kind:
            raise TokenError("Token has wrong type")
        return str(claims["sub"])
