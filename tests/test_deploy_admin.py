"""The admin token as the deployments give it: `admin_token_file` (SWITCHBOARD_ADMIN_TOKEN_FILE, a
mounted compose or Kubernetes secret) read at startup, with errors that name the file and never
its content; and docs/DEPLOYMENT.md's table of what the token opens, equal to the routes that
require it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from support.deploy import REPO, settings_from_env, unknown_settings
from support.fakes import make_settings, run, serving

from router.app import build_app
from router.deps import require_admin
from router.settings import SettingsError, load_settings

TOKEN = "file-admin-token-0123456789abcdef"
DEPLOYMENT = REPO / "docs" / "DEPLOYMENT.md"


def test_the_admin_token_is_read_from_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "admin_token"
    path.write_text(TOKEN + "\n")  # as `print(...) > file` writes it: the newline is dropped
    env = {"SWITCHBOARD_ADMIN_TOKEN_FILE": str(path), "SWITCHBOARD_REVIEW_UI": "true"}
    settings = settings_from_env(env, monkeypatch)
    assert settings.admin_token is not None and settings.admin_token.get_secret_value() == TOKEN
    assert settings.review_ui  # the inbox's own check saw the token read from the file
    assert TOKEN not in repr(settings) and TOKEN not in str(settings)


def test_the_token_from_the_file_opens_the_admin_endpoints(tmp_path: Path) -> None:
    path = tmp_path / "admin_token"
    path.write_text(TOKEN)
    settings = make_settings(tmp_path, admin_token_file=path)

    async def scenario() -> None:
        async with serving(settings) as client:
            ok = await client.get("/v1/review", headers={"Authorization": f"Bearer {TOKEN}"})
            assert ok.status_code == 200, ok.text
            wrong = await client.get("/v1/review", headers={"Authorization": f"Bearer {TOKEN[::-1]}"})
            assert wrong.status_code == 403, wrong.text

    run(scenario())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b" \n\n", "is empty"),
        (b"short-token\n", "is 11 characters; use at least 16"),
        (b"two-words-0123456 789abcdef\n", "must not contain whitespace"),
        (b"\xff\xfe-not-text-0123456789", "is not UTF-8 text"),
        ("directory", "cannot be read"),
    ],
    ids=["missing", "empty", "blank", "short", "inner-space", "not-utf8", "directory"],
)
def test_a_bad_token_file_stops_startup_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes | str | None, message: str
) -> None:
    path = tmp_path / "admin_token"
    if content == "directory":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(SettingsError, match=re.escape(message)) as err:
        settings_from_env({"SWITCHBOARD_ADMIN_TOKEN_FILE": str(path)}, monkeypatch)
    assert "SWITCHBOARD_ADMIN_TOKEN_FILE" in str(err.value) and str(path) in str(err.value)
    if isinstance(content, bytes) and content.strip():
        assert content.decode(errors="ignore").strip() not in str(err.value)  # never echoed


def test_a_token_and_a_token_file_together_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "admin_token"
    path.write_text(TOKEN)
    with pytest.raises(SettingsError, match="not both"):
        load_settings(admin_token=TOKEN, admin_token_file=path)


# ------------------------------------------------------------------ docs/DEPLOYMENT.md


def _calls(dependant: Any) -> Iterator[Any]:
    for dep in dependant.dependencies:
        yield dep.call
        yield from _calls(dep)


def admin_routes(tmp_path: Path) -> set[str]:
    """ "METHOD /path" of every route the admin token guards (`require_admin`), from the app."""
    app = build_app(make_settings(tmp_path, admin_token=TOKEN, review_ui=True))
    return {
        f"{method} {route.path}"
        for route in app.routes
        if isinstance(route, APIRoute) and require_admin in set(_calls(route.dependant))
        for method in route.methods
    }


def test_deployment_doc_lists_every_endpoint_the_admin_token_opens(tmp_path: Path) -> None:
    text = DEPLOYMENT.read_text()
    section = text.split("\n## The admin token\n", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`((?:GET|POST|PUT|PATCH|DELETE) /[^`]*)`", section))
    routes = admin_routes(tmp_path)
    assert len(routes) >= 10, routes
    assert listed == routes, f"missing: {sorted(routes - listed)}, not guarded: {sorted(listed - routes)}"
    assert "`/review`" in section  # the inbox, signed in with the token as "admin"
    assert unknown_settings(re.findall(r"\bSWITCHBOARD_[A-Z_]+", section)) == set()
