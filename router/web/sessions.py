"""Who is signed in to the review inbox: tokens, signed session cookies, CSRF tokens.

- *Sign-in*: the admin token (reviewer "admin") or a reviewer's token from `review_tokens`,
  compared in constant time. The reviewer's name is the `source` of every feedback row they give.
- *Session*: a cookie holding `{reviewer, nonce, expiry, token fingerprint}` and an HMAC-SHA256
  of it, HttpOnly, SameSite=Strict, Path=/review, Secure over https. The key is `session_secret`
  (sessions then hold across replicas and restarts) or a random key per process. The fingerprint
  is an HMAC of the reviewer's token: change or remove a token and its sessions end.
- *Sign-out*: the cookie is cleared and its nonce revoked (in this process, until it expires).
- *CSRF*: every form carries a token derived from the session's nonce (before sign-in: from a
  short-lived pre-session cookie), checked in constant time on every POST. SameSite=Strict
  already keeps the cookie off cross-site posts; the token is the second lock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from pydantic import SecretStr

from router.settings import ADMIN_REVIEWER, Settings

COOKIE = "switchboard_review"
LOGIN_COOKIE = "switchboard_review_login"  # the sign-in form's CSRF nonce, before a session exists
LOGIN_COOKIE_S = 3600


@dataclass(frozen=True)
class Session:
    reviewer: str
    nonce: str
    expires: float
    csrf: str  # the token every form of this session carries


class SessionKeeper:
    """Signs and reads the inbox's cookies with one key (see the module docstring)."""

    def __init__(self, secret: SecretStr | None) -> None:
        if secret is None:
            self._key = secrets.token_bytes(32)
        else:
            self._key = hmac.new(
                b"switchboard review sessions", secret.get_secret_value().encode(), hashlib.sha256
            ).digest()
        self._revoked: dict[str, float] = {}  # nonce -> expiry

    # -- tokens ----------------------------------------------------------------------------

    def reviewer_for(self, settings: Settings, token: str) -> str | None:
        """The reviewer this token signs in, or None. Every candidate is compared, in constant time."""
        found = None
        given = token.strip().encode()
        for name, secret in _tokens(settings).items():
            if hmac.compare_digest(given, secret.encode()) and given:
                found = name
        return found

    def _fingerprint(self, token: str) -> str:
        return self._mac("token", token)[:24]

    # -- sessions --------------------------------------------------------------------------

    def issue(self, settings: Settings, reviewer: str, now: float | None = None) -> str:
        """A cookie value for `reviewer` (who must have a token in `settings`)."""
        token = _tokens(settings)[reviewer]
        expires = (now or time.time()) + settings.review_session_hours * 3600
        payload = {
            "r": reviewer,
            "n": secrets.token_urlsafe(16),
            "e": round(expires),
            "f": self._fingerprint(token),
        }
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{self._mac('session', body)}"

    def read(self, settings: Settings, cookie: str | None, now: float | None = None) -> Session | None:
        """The session in `cookie`, or None when it is missing, forged, expired, signed out, or its
        reviewer's token has changed since."""
        if not cookie or cookie.count(".") != 1:
            return None
        body, mac = cookie.split(".")
        if not hmac.compare_digest(mac.encode(), self._mac("session", body).encode()):
            return None
        try:
            payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            reviewer, nonce, expires, fingerprint = payload["r"], payload["n"], payload["e"], payload["f"]
        except (ValueError, KeyError, TypeError):
            return None
        now = now or time.time()
        if not isinstance(expires, int) or expires <= now or nonce in self._revoked:
            return None
        token = _tokens(settings).get(reviewer)
        if token is None or not hmac.compare_digest(str(fingerprint), self._fingerprint(token)):
            return None
        return Session(reviewer, nonce, float(expires), self._mac("csrf", nonce))

    def revoke(self, session: Session, now: float | None = None) -> None:
        now = now or time.time()
        self._revoked = {n: e for n, e in self._revoked.items() if e > now}
        self._revoked[session.nonce] = session.expires

    # -- CSRF before sign-in ---------------------------------------------------------------

    @staticmethod
    def new_login_nonce() -> str:
        return secrets.token_urlsafe(16)

    def login_csrf(self, nonce: str) -> str:
        return self._mac("login", nonce)

    def check_csrf(self, expected: str | None, given: str | None) -> bool:
        return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))

    def _mac(self, purpose: str, value: str) -> str:
        return _b64(hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256).digest())


def _tokens(settings: Settings) -> dict[str, str]:
    """Reviewer name -> token: the review tokens, and the admin token as "admin"."""
    tokens = {name: secret.get_secret_value() for name, secret in settings.review_tokens.items()}
    if settings.admin_token is not None:
        tokens[ADMIN_REVIEWER] = settings.admin_token.get_secret_value()
    return tokens


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")
