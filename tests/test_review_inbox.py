"""The review inbox (`/review`): support leads label the queue in a browser.

The app runs under a real uvicorn server (`uvicorn_serving`, the keyword FakeEngine with a few
scripted, unsure answers) on a real SQLite store; Playwright drives Debian's Chromium
(/usr/bin/chromium, or PLAYWRIGHT_CHROMIUM). Every label is checked in the store's feedback table,
with the reviewer as its `source`. Sessions, CSRF and the settings are also checked without a
browser, with httpx. Set REVIEW_INBOX_SCREENSHOT=docs/images/review-inbox.png to refresh the
screenshot in docs/ROUTER.md ("Review inbox").
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pydantic import SecretStr
from sqlalchemy import select
from support.fakes import FakeEngine, make_settings
from test_api_limits import uvicorn_serving

from router.settings import SettingsError
from router.store import create_db_engine
from router.store.models import feedback as feedback_table
from router.web.sessions import COOKIE, SessionKeeper
from serving.registry import Registry
from serving.taxonomy import PENDING_MIN_EXAMPLES

CHROMIUM = os.environ.get("PLAYWRIGHT_CHROMIUM", "/usr/bin/chromium")
ADMIN = "inbox-admin-token-0123456789"
ALICE = "alice-reviewer-token-0123456789"
# LABELS: bill_explanation, no_signal, cancel_service, oos. Unsure answers, so the queue has an order.
SCRIPT = {  # in the queue's order: smallest margin (top-1 minus top-2) first
    "my bill went up and the internet keeps dropping": [0.46, 0.42, 0.07, 0.05],
    "there's no signal since the storm, do I still pay for it?": [0.36, 0.44, 0.12, 0.08],
    "is there a discount for students?": [0.3, 0.05, 0.2, 0.45],
    "can you send a new SIM to my new address": [0.22, 0.18, 0.2, 0.4],
    "I'd like to stop the landline but keep mobile": [0.31, 0.06, 0.51, 0.12],
    "the ATM kept my card": [0.2, 0.15, 0.15, 0.5],
}
SURE = "why is my bill so high this month"  # a keyword: 0.9, far down the queue

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect


class ScriptedEngine(FakeEngine):
    async def classify(self, texts: Sequence[str]) -> np.ndarray:
        rows = await super().classify(texts)
        for i, text in enumerate(texts):
            if text in SCRIPT:
                rows[i] = SCRIPT[text]
        return rows


def chromium() -> Iterator[Any]:
    """Debian's Chromium under Playwright, for a module's `browser` fixture (skips without it)."""
    if not Path(CHROMIUM).exists() and shutil.which(CHROMIUM) is None:
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium()


def registry(tmp_path: Path) -> Path:
    from support.fakes import LABELS

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"id2label": dict(enumerate(LABELS))}))
    path = tmp_path / "registry"
    Registry(path).register(model, alias="champion")
    return path


def settings_for(tmp_path: Path, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "admin_token": ADMIN,
        "review_ui": True,
        "review_tokens": {"alice": ALICE},
        "registry_dir": registry(tmp_path),
        "audit_rate": 0.0,  # no request in the audit sample unless a test asks (it is random)
    }
    values.update(overrides)
    return make_settings(tmp_path, **values)


def route_all(base: str, texts: Sequence[str]) -> dict[str, str]:
    """text -> request id, routed through the API as customers' queries are."""
    ids = {}
    for text in texts:
        r = httpx.post(f"{base}/v1/route", json={"text": text}, timeout=10)
        assert r.status_code == 200, r.text
        ids[text] = r.json()["request_id"]
    deadline = time.monotonic() + 5  # the writer flushes within log_flush_interval_s
    while time.monotonic() < deadline and not _logged(base, ids):
        time.sleep(0.02)
    return ids


def _logged(base: str, ids: dict[str, str]) -> bool:
    r = httpx.get(f"{base}/v1/review", params={"limit": 1000}, headers={"Authorization": f"Bearer {ADMIN}"})
    return {i for item in r.json()["items"] for i in item["request_ids"]} >= set(ids.values())


def feedback_rows(url: str) -> dict[str, dict[str, Any]]:
    """request id -> its feedback row."""
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            return {row["request_id"]: dict(row) for row in conn.execute(select(feedback_table)).mappings()}
    finally:
        engine.dispose()


def sign_in(page: Any, base: str, token: str) -> None:
    page.goto(f"{base}/review")
    assert page.url == f"{base}/review/login"  # no session: redirected
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/review")


def current_text(page: Any) -> str:
    return str(page.locator("li.item.current blockquote.text").inner_text())


def doc_box(locator: Any) -> list[float]:
    """Where an element is on the page (not in the viewport, which may scroll)."""
    return list(
        locator.evaluate(
            "e => { const r = e.getBoundingClientRect();"
            " return [r.left + scrollX, r.top + scrollY, r.width, r.height]; }"
        )
    )


def saved(page: Any, intent: str) -> None:
    expect(page.locator("#status")).to_have_text(f"Saved: {intent}.")


def labelled(page: Any, base: str, action: Any) -> dict[str, Any]:
    """Do `action` (a click, a key) and wait for the label's answer; its JSON body."""
    with page.expect_response(f"{base}/review/label") as answer:
        action()
    assert answer.value.headers["cache-control"] == "no-store"
    return dict(answer.value.json())


# -- in the browser ---------------------------------------------------------------------------------


def test_sign_in_label_with_the_mouse_and_the_keyboard_then_sign_out(tmp_path: Path, browser: Any) -> None:
    settings = settings_for(tmp_path)
    with uvicorn_serving(settings, ScriptedEngine()) as base:
        ids = route_all(base, [*SCRIPT, SURE])
        context = browser.new_context(viewport={"width": 1000, "height": 900})
        page = context.new_page()
        urls: list[str] = []
        page.on("request", lambda r: urls.append(r.url))
        sign_in(page, base, ALICE)
        (cookie,) = [c for c in context.cookies() if c["name"] == COOKIE]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/review"
        assert cookie["secure"] is False  # plain http here; Secure over https
        expect(page.locator("#reviewer")).to_have_text("alice")
        expect(page.locator("#left")).to_have_text(str(len(ids)))

        # the mouse: confirm the prediction of the first item (the smallest margin)
        first = current_text(page)
        assert first == "my bill went up and the internet keeps dropping"
        third = page.locator("li.item").nth(2)
        before = doc_box(third)
        labelled(page, base, page.locator("li.item.current button.confirm").click)
        saved(page, "bill_explanation")
        assert doc_box(third) == before  # the labelled item kept its place: nothing moved
        row = feedback_rows(settings.database_url)[ids[first]]
        assert (row["correct_intent"], row["agree"], row["source"]) == ("bill_explanation", True, "alice")
        expect(page.locator("#left")).to_have_text(str(len(ids) - 1))
        expect(page.locator("#today")).to_have_text("1")

        # the keyboard: 2 picks the second alternative of the item now current
        second = current_text(page)
        labelled(page, base, lambda: page.keyboard.press("2"))
        saved(page, "bill_explanation")  # no_signal was top-1, bill_explanation second
        row = feedback_rows(settings.database_url)[ids[second]]
        assert (row["correct_intent"], row["agree"], row["source"]) == ("bill_explanation", False, "alice")

        # Enter confirms (the focus on no control), S skips
        page.evaluate("document.activeElement.blur()")
        third_text = current_text(page)
        labelled(page, base, lambda: page.keyboard.press("Enter"))
        saved(page, "oos")  # the scripted top-1 of "is there a discount ..." is oos
        assert feedback_rows(settings.database_url)[ids[third_text]]["source"] == "alice"
        skipped = current_text(page)
        labelled(page, base, lambda: page.keyboard.press("s"))
        expect(page.locator("#status")).to_have_text("Skipped.")
        assert ids[skipped] not in feedback_rows(settings.database_url)
        expect(page.locator("#today")).to_have_text("3")

        # a reload: labelled and skipped items are gone, the counts agree
        page.reload()
        shown = page.locator("li.item blockquote.text").all_inner_texts()
        assert not {first, second, third_text, skipped} & set(shown)
        expect(page.locator("#left")).to_have_text(str(len(ids) - 4))
        expect(page.locator("#today")).to_have_text("3")

        # sign out: back at the sign-in page, and the inbox needs a session again
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(f"{base}/review/login")
        assert not [c for c in context.cookies() if c["name"] == COOKIE]
        page.goto(f"{base}/review")
        assert page.url == f"{base}/review/login"

        texts = [*SCRIPT, SURE]  # customer texts never travel in a URL (nor the access log)
        words = {w.lower() for t in texts for w in re.findall(r"[A-Za-z']{5,}", t)}
        assert not [u for u in urls if any(w in u.lower() for w in words)], urls
        context.close()


def test_correct_add_a_pending_intent_and_label_with_it(tmp_path: Path, browser: Any) -> None:
    settings = settings_for(tmp_path)
    with uvicorn_serving(settings, ScriptedEngine()) as base:
        ids = route_all(base, [*SCRIPT, SURE])
        context = browser.new_context(viewport={"width": 1000, "height": 1400})
        page = context.new_page()
        sign_in(page, base, ADMIN)
        expect(page.locator("#reviewer")).to_have_text("admin")

        # another intent, from the searchable list
        first = current_text(page)
        page.locator("li.item.current").get_by_label("Another intent").fill("cancel_service")
        page.locator("li.item.current").get_by_role("button", name="Correct").click()
        saved(page, "cancel_service")
        row = feedback_rows(settings.database_url)[ids[first]]
        assert (row["correct_intent"], row["agree"], row["source"]) == ("cancel_service", False, "admin")

        # an intent that does not exist is refused, nothing stored
        second = current_text(page)
        page.locator("li.item.current").get_by_label("Another intent").fill("teleportation")
        page.locator("li.item.current").get_by_label("Another intent").press("Enter")
        expect(page.locator("#status")).to_contain_text("'teleportation' is not one of our intents")
        assert ids[second] not in feedback_rows(settings.database_url)

        # add a pending intent from the page; it joins the list and the header
        page.get_by_label("Name").fill("sim_delivery")
        page.get_by_label("Route", exact=True).last.fill("logistics")
        page.get_by_label("Description").fill("Send, replace or track a SIM card")
        page.get_by_role("button", name="Add intent").click()
        expect(page.locator("#status")).to_have_text(
            "Added the pending intent sim_delivery: it is in the list of intents now."
        )
        expect(page.locator(".pending")).to_contain_text("sim_delivery → logistics")
        expect(page.locator(".pending")).to_contain_text(f"0/{PENDING_MIN_EXAMPLES} examples")
        assert page.locator('#intent-list option[value="sim_delivery"]').count() == 1

        # and label an item with it
        sim = "can you send a new SIM to my new address"
        item = page.locator("li.item", has_text=sim)
        item.get_by_label("Another intent").fill("sim_delivery")
        item.get_by_role("button", name="Correct").click()
        saved(page, "sim_delivery")
        row = feedback_rows(settings.database_url)[ids[sim]]
        assert (row["correct_intent"], row["agree"], row["source"]) == ("sim_delivery", False, "admin")

        # not an intent of ours: the model's out-of-scope label
        card = "the ATM kept my card"
        page.locator("li.item", has_text=card).get_by_role("button", name="Not an intent of ours").click()
        saved(page, "oos")
        assert feedback_rows(settings.database_url)[ids[card]]["correct_intent"] == "oos"

        page.reload()
        expect(page.locator(".pending")).to_contain_text(f"1/{PENDING_MIN_EXAMPLES} examples")
        expect(page.locator("#agreement")).to_contain_text("33.3% of the last 3 labels, any queue")
        expect(page.locator("#live-accuracy")).to_have_text("no audit labels yet")
        out = os.environ.get("REVIEW_INBOX_SCREENSHOT")
        page.set_viewport_size({"width": 1000, "height": 1000})
        page.evaluate("window.scrollTo({top: 0, behavior: 'instant'})")
        page.screenshot(path=out or str(tmp_path / "inbox.png"))
        context.close()


def test_a_forged_post_is_refused_and_the_page_fits_320_px(tmp_path: Path, browser: Any) -> None:
    settings = settings_for(tmp_path)
    with uvicorn_serving(settings, ScriptedEngine()) as base:
        ids = route_all(base, list(SCRIPT))
        context = browser.new_context(viewport={"width": 320, "height": 640})
        page = context.new_page()
        sign_in(page, base, ALICE)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 320, f"the page scrolls sideways at 320 px ({width} px wide)"
        target = next(iter(ids.values()))
        # a form this page did not render: the session cookie goes along, the CSRF token does not
        with page.expect_navigation() as navigation:
            page.evaluate(
                """rid => {
                    const form = document.createElement("form");
                    form.method = "post";
                    form.action = "/review/label";
                    for (const [k, v] of [["request_id", rid], ["choice", "pick:cancel_service"]]) {
                        const input = document.createElement("input");
                        input.name = k; input.value = v; form.append(input);
                    }
                    document.body.append(form);
                    form.submit();
                }""",
                target,
            )
        assert navigation.value.status == 403
        expect(page.locator("h1")).to_have_text("Not allowed")
        assert feedback_rows(settings.database_url) == {}
        context.close()


# -- without a browser: sessions, CSRF, settings ----------------------------------------------------


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html[:500]
    return match.group(1)


def test_sessions_and_csrf_over_plain_http(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    with uvicorn_serving(settings, ScriptedEngine()) as base:
        ids = route_all(base, list(SCRIPT))
        rid = next(iter(ids.values()))
        with httpx.Client(base_url=base, timeout=10) as client:
            r = client.get("/review")
            assert (r.status_code, r.headers["location"]) == (303, "/review/login")
            r = client.post("/review/label", data={"request_id": rid, "choice": "skip"})
            assert r.status_code == 403  # no session: refused, not redirected

            login = client.get("/review/login")
            assert login.headers["cache-control"] == "no-store"
            assert "frame-ancestors 'none'" in login.headers["content-security-policy"]
            r = client.post("/review/login", data={"token": ALICE})  # no CSRF token
            assert r.status_code == 403
            r = client.post("/review/login", data={"token": "x" * 30, "csrf": _csrf(login.text)})
            assert r.status_code == 403 and "signs nobody in" in r.text
            r = client.post("/review/login", data={"token": ALICE, "csrf": _csrf(login.text)})
            assert r.status_code == 303
            page = client.get("/review")
            assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
            csrf = _csrf(page.text)
            for forged in ({}, {"csrf": "forged"}, {"csrf": csrf[:-1]}):
                r = client.post("/review/label", data={"request_id": rid, "choice": "confirm",
                                                       "predicted": "no_signal", **forged})  # fmt: skip
                assert r.status_code == 403, forged
            assert feedback_rows(settings.database_url) == {}

            # without JavaScript: post, redirect (filters kept, no text in the URL), get
            r = client.post(
                "/review/label",
                data={"request_id": rid, "choice": "pick:no_signal", "csrf": csrf,
                      "back": "strategy=fallback&route=human_review&evil=https://x"},
            )  # fmt: skip
            assert r.status_code == 303
            assert r.headers["location"] == (
                "/review?strategy=fallback&route=human_review&done=labelled&name=no_signal"
            )
            assert feedback_rows(settings.database_url)[rid]["source"] == "alice"
            r = client.post("/review/label", data={"request_id": "nope", "choice": "confirm",
                                                   "predicted": "no_signal", "csrf": csrf})  # fmt: skip
            assert r.status_code == 404 and "not in the log" in r.text

            cookie = client.cookies[COOKIE]
            body, mac = cookie.split(".")
            client.cookies.set(COOKIE, f"{body}.{mac[:-2]}xx", path="/review")  # tampered
            assert client.get("/review").status_code == 303
            client.cookies.set(COOKIE, cookie, path="/review")
            assert client.post("/review/logout", data={"csrf": csrf}).status_code == 303
            client.cookies.set(COOKIE, cookie, path="/review")  # a copy kept from before sign-out
            assert client.get("/review").status_code == 303  # revoked


def test_sessions_end_when_a_token_changes_or_expires(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, session_secret="session-secret-0123456789")
    keeper = SessionKeeper(settings.session_secret)
    assert keeper.reviewer_for(settings, ALICE) == "alice"
    assert keeper.reviewer_for(settings, ADMIN) == "admin"
    assert keeper.reviewer_for(settings, "") is None and keeper.reviewer_for(settings, ALICE[:-1]) is None
    cookie = keeper.issue(settings, "alice", now=1000.0)
    session = keeper.read(settings, cookie, now=1001.0)
    assert session is not None and session.reviewer == "alice"
    # one secret: another replica (or a restart) reads the same session
    assert SessionKeeper(settings.session_secret).read(settings, cookie, now=1001.0) == session
    assert SessionKeeper(None).read(settings, cookie, now=1001.0) is None  # a random key: not
    assert keeper.read(settings, cookie, now=1000.0 + 12 * 3600 + 1) is None  # expired
    rotated = settings.model_copy(update={"review_tokens": {"alice": SecretStr("a-new-token-0123456789")}})
    assert keeper.read(rotated, cookie, now=1001.0) is None  # her token changed
    removed = settings.model_copy(update={"review_tokens": {}})
    assert keeper.read(removed, cookie, now=1001.0) is None
    keeper.revoke(session, now=1001.0)
    assert keeper.read(settings, cookie, now=1001.0) is None


def test_the_inbox_is_off_unless_configured(tmp_path: Path) -> None:
    with uvicorn_serving(make_settings(tmp_path, admin_token=ADMIN), ScriptedEngine()) as base:
        for path in ("/review", "/review/login", "/review/static/review.js"):
            assert httpx.get(f"{base}{path}").status_code == 404
        assert httpx.post(f"{base}/review/login", data={"token": ADMIN}).status_code == 404


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"review_ui": True}, "review_ui needs admin_token or review_tokens"),
        ({"review_tokens": {"bob": "short"}}, "token of 'bob' is 5 characters"),
        ({"review_tokens": {"admin": ALICE}}, "reviewer name 'admin' is the admin token's"),
        ({"review_tokens": {"two words": ALICE}}, "reviewer name 'two words'"),
        ({"review_tokens": {"a": ALICE, "b": ALICE}}, "two reviewers share a token"),
        ({"review_tokens": {"a": ADMIN}, "admin_token": ADMIN}, "a review token equals admin_token"),
        ({"session_secret": "short"}, "setting 'session_secret'"),
    ],
)
def test_review_settings_are_checked(tmp_path: Path, values: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        make_settings(tmp_path, **values)


def test_review_tokens_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_REVIEW_TOKENS", json.dumps({"alice": ALICE}))
    monkeypatch.setenv("SWITCHBOARD_REVIEW_UI", "true")
    settings = make_settings(tmp_path)
    assert settings.review_ui and settings.review_tokens["alice"].get_secret_value() == ALICE


def test_the_audit_queue_and_live_accuracy_in_the_header(tmp_path: Path, browser: Any) -> None:
    """Every request audited: the audit queue offers each of them (the same text twice too), and a
    label on one moves the header's live accuracy, with its interval and sample size."""
    settings = settings_for(tmp_path, audit_rate=1.0)
    with uvicorn_serving(settings, ScriptedEngine()) as base:
        first = httpx.post(f"{base}/v1/route", json={"text": SURE}, timeout=10).json()
        httpx.post(f"{base}/v1/route", json={"text": SURE}, timeout=10).raise_for_status()
        context = browser.new_context(viewport={"width": 1000, "height": 900})
        page = context.new_page()
        sign_in(page, base, ADMIN)
        expect(page.locator("#live-accuracy")).to_have_text("no audit labels yet")
        page.goto(f"{base}/review?strategy=audit")
        expect(page.locator("li.item", has_text=SURE)).to_have_count(2)  # no de-duplication
        item = page.locator("li.item.current")
        item.get_by_label("Another intent").fill(first["intent"])
        item.get_by_role("button", name="Correct").click()
        saved(page, first["intent"])
        page.reload()
        expect(page.locator("li.item", has_text=SURE)).to_have_count(1)  # its copy is still offered
        expect(page.locator("#live-accuracy")).to_contain_text("100.0%")
        expect(page.locator("#live-accuracy")).to_contain_text("90% interval) on 1 audit labels")
        context.close()
