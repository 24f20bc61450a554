"""The review inbox's proposed intents (`/review/proposals`): what intent discovery found in the
queries the router could not route, and each decision on it, in a browser: name it (confirming
every query), confirm selected queries, remove selected ones, merge it into an intent, dismiss it.

One server (the keyword FakeEngine on a real SQLite store and registry) and one Chromium for the
module, as in test_review_inbox. The proposals are written as `switchboard intents discover`
writes them (router.discovery.record, two runs so the list has a trend), from clusters built by
hand: the encoder is not what this checks. Each test decides on its own proposal; the list's test
comes first (file order), while every proposal is still open. Every decision is checked in the
store: feedback rows (source `discovery`), the proposal's status and members, the taxonomy.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest
from support.fakes import FakeEngine
from test_api_limits import uvicorn_serving
from test_review_inbox import (
    ADMIN,
    ALICE,
    chromium,
    expect,
    feedback_rows,
    route_all,
    settings_for,
    sign_in,
)

from router.discovery import DiscoverOptions, record
from router.store import create_db_engine
from router.store.discovery import Proposal, get_proposal, unrouted_queries
from serving.registry import Registry
from serving.taxonomy import PENDING_MIN_EXAMPLES
from training.discovery import Cluster

SPAIN = "<b>roaming</b> fees in Spain? <script>alert(1)</script>"  # shown as typed, never as markup
GROUPS = {  # a proposal's keyword -> its queries (no word the FakeEngine knows: flat answers, fallbacks)
    "stolen": [f"my phone was stolen at the station {i}" for i in range(4)],
    "esim": [f"how do I move my esim to a new phone {i}" for i in range(3)],
    "roaming": [SPAIN, *[f"roaming charges abroad {i}" for i in range(2)]],
    "wifi": [f"the wifi router keeps rebooting {i}" for i in range(3)],
    "parking": [f"is there parking at the shop {i}" for i in range(2)],
}
LATE = {"stolen": 1, "parking": 2}  # asked after the first run: stolen grows from 3, parking is new
KEYWORDS = {
    "stolen": ["stolen", "phone", "station"],
    "esim": ["esim", "move"],
    "roaming": ["roaming", "abroad", "fees"],
    "wifi": ["wifi", "router", "rebooting"],
    "parking": ["parking", "shop"],
}
NEAREST = {
    "stolen": ("cancel_service", 0.41),
    "roaming": ("bill_explanation", 0.58),
    "wifi": ("no_signal", 0.83),
}
ROUTED = "why is my bill so high this month"  # a keyword: answered with confidence, not unrouted

playwright_api = pytest.importorskip("playwright.sync_api")


@dataclass
class Site:
    base: str
    settings: Any
    ids: dict[str, str]  # text -> request id
    proposals: dict[str, str]  # keyword -> proposal id


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium()


def discover(url: str, keywords: Sequence[str]) -> dict[str, str]:
    """One discovery run over the last hour's unrouted queries, a cluster per keyword (its queries
    are those with the word); keyword -> proposal id."""
    engine = create_db_engine(url)
    now = datetime.now(UTC)
    opts = DiscoverOptions(since=now - timedelta(hours=1), until=now + timedelta(hours=1), min_size=2)
    try:
        total, unrouted, queries = unrouted_queries(engine, opts.since, opts.until)
        clusters = []
        for word in keywords:
            members = [i for i, q in enumerate(queries) if word in q.text.lower()]
            centroid = np.zeros(len(GROUPS), dtype=np.float32)
            centroid[list(GROUPS).index(word)] = 1.0
            nearest, similarity = NEAREST.get(word, (None, None))
            clusters.append(
                Cluster(
                    members,
                    [0.95 - 0.01 * k for k in range(len(members))],
                    centroid,
                    [queries[i].text for i in members[:3]],
                    KEYWORDS[word],
                    nearest,
                    similarity,
                )
            )
        summary = record(engine, queries, clusters, (total, unrouted), "fake-v1", opts, now)
    finally:
        engine.dispose()
    made = {p for p in (*summary.created, *summary.grown)}
    return {word: pid for word in keywords for pid in made if stored(url, pid).keywords == KEYWORDS[word]}


def stored(url: str, proposal_id: str) -> Proposal:
    engine = create_db_engine(url)
    try:
        return get_proposal(engine, proposal_id)
    finally:
        engine.dispose()


def states(url: str, proposal_id: str) -> dict[str, str]:
    """text -> its state in the proposal (member, confirmed, removed)."""
    return {m.text or "": m.state for m in stored(url, proposal_id).members}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    settings = settings_for(tmp_path_factory.mktemp("proposals"))
    with uvicorn_serving(settings, FakeEngine()) as base:
        early = [t for word, texts in GROUPS.items() for t in texts[: len(texts) - LATE.get(word, 0)]]
        ids = route_all(base, [*early, ROUTED])
        discover(settings.database_url, [w for w in GROUPS if w != "parking"])
        ids |= route_all(
            base, [t for word, texts in GROUPS.items() for t in texts[len(texts) - LATE.get(word, 0) :]]
        )
        proposals = discover(settings.database_url, list(GROUPS))
        assert proposals.keys() == GROUPS.keys()
        yield Site(base, settings, ids, proposals)


def open_page(browser: Any, site: Site, token: str = ALICE) -> tuple[Any, Any]:
    """A signed-in page (and its context) on the list of proposed intents, reached by its tab."""
    context = browser.new_context(viewport={"width": 1000, "height": 1200})
    page = context.new_page()
    sign_in(page, site.base, token)
    page.get_by_role("link", name=re.compile("^Proposed intents")).click()
    page.wait_for_url(f"{site.base}/review/proposals")
    return context, page


def open_proposal(page: Any, site: Site, word: str) -> None:
    page.locator("li.proposal", has_text=", ".join(KEYWORDS[word])).get_by_role("link").first.click()
    page.wait_for_url(f"{site.base}/review/proposals/{site.proposals[word]}")


def submitted(page: Any, action: Any) -> Any:
    """Do `action` (a click that posts a form) and return the answer the page ended on."""
    with page.expect_navigation() as navigation:
        action()
    return navigation.value


def discovery_feedback(site: Site, word: str) -> dict[str, tuple[str, str]]:
    """text -> (intent, source) of the feedback stored on this group's queries."""
    rows = feedback_rows(site.settings.database_url)
    texts = {site.ids[t]: t for t in GROUPS[word]}
    return {texts[rid]: (row["correct_intent"], row["source"]) for rid, row in rows.items() if rid in texts}


# -- in the browser ---------------------------------------------------------------------------------


def test_the_list_shows_each_open_proposal_and_the_unrouted_share(site: Site, browser: Any) -> None:
    context, page = open_page(browser, site)
    expect(page.locator("#proposals-tab")).to_have_text("Proposed intents 5 open")
    expect(page.locator("#proposals-tab")).to_have_attribute("aria-current", "page")
    # 16 requests, all but the one with a keyword unrouted
    expect(page.locator("#unrouted-share")).to_contain_text("93.8% of the queries were not routed: 15 of 16")
    cards = page.locator("li.proposal")
    expect(cards).to_have_count(5)
    assert cards.locator("h2").all_inner_texts()[0] == "stolen, phone, station"  # largest first

    stolen = cards.filter(has_text="stolen, phone, station")
    expect(stolen.locator(".size")).to_have_text("4 queries")
    expect(stolen.locator(".trend")).to_have_text("grew from 3 (+1)")
    expect(stolen.locator(".nearest")).to_have_text("nearest intent cancel_service (41% similar)")
    expect(stolen.locator(".counts")).to_have_text("4 to review · 0 confirmed · 0 removed")
    expect(stolen.locator(".examples li")).to_have_count(3)
    expect(stolen.locator(".examples")).to_contain_text("my phone was stolen at the station 3")
    expect(cards.filter(has_text="parking, shop").locator(".trend")).to_have_text("new")
    wifi = cards.filter(has_text="wifi, router, rebooting")
    expect(wifi.locator(".trend")).to_have_text("unchanged since the run before")
    expect(wifi.locator(".nearest")).to_have_text("nearest intent no_signal (83% similar)")
    expect(cards.filter(has_text="esim, move").locator(".nearest")).to_have_text("no nearest intent")

    # a customer's text is text: shown as typed, never markup
    roaming = cards.filter(has_text="roaming, abroad, fees")
    expect(roaming.locator(".examples")).to_contain_text(SPAIN)
    assert page.locator("main b, main script").count() == 0

    # the queue's page has the tab too
    page.get_by_role("link", name="Review queue").click()
    page.wait_for_url(f"{site.base}/review")
    expect(page.locator("#proposals-tab")).to_have_text("Proposed intents 5 open")
    context.close()


def test_name_a_proposal_and_confirm_all_its_queries(site: Site, browser: Any) -> None:
    context, page = open_page(browser, site, ADMIN)
    open_proposal(page, site, "stolen")
    expect(page.locator("#proposal-state")).to_have_text("Open: waiting for a decision")
    expect(page.locator("li.member")).to_have_count(4)
    form = page.locator("#name-form")

    # a name we have: refused (409), said plainly, the form kept as it was; nothing stored
    form.get_by_label("Name", exact=True).fill("no_signal")
    form.get_by_label("Route").fill("security")
    answer = submitted(page, form.get_by_role("button", name="Name it").click)
    assert answer.status == 409
    expect(page.locator("#error")).to_have_text(
        "There is already an intent named 'no_signal': choose another name, or merge the proposal into it."
    )
    expect(form.get_by_label("Route")).to_have_value("security")
    assert "Traceback" not in page.content()
    assert stored(site.settings.database_url, site.proposals["stolen"]).status == "open"

    form.get_by_label("Name", exact=True).fill("lost_or_stolen")
    form.get_by_label("Description").fill("A phone lost or stolen: block the SIM")
    form.get_by_label("Also confirm all 4 of its queries as its examples").check()
    submitted(page, form.get_by_role("button", name="Name it").click)
    expect(page.locator("#status")).to_have_text(
        "Named it lost_or_stolen: a pending intent now. 4 queries confirmed as its examples."
    )
    expect(page.locator("#proposal-state")).to_have_text("Named lost_or_stolen: a pending intent")
    expect(page.locator(".counts")).to_have_text("0 to review · 4 confirmed · 0 removed")
    expect(page.locator("#name-form")).to_have_count(0)  # decided: no second name

    proposal = stored(site.settings.database_url, site.proposals["stolen"])
    assert (proposal.status, proposal.intent) == ("named", "lost_or_stolen")
    assert discovery_feedback(site, "stolen") == dict.fromkeys(
        GROUPS["stolen"], ("lost_or_stolen", "discovery")
    )
    pending = Registry(site.settings.registry_dir).taxonomy().changes.pending
    assert pending["lost_or_stolen"]["route"] == "security"
    assert pending["lost_or_stolen"]["description"] == "A phone lost or stolen: block the SIM"

    # the queue's page counts the new intent's examples; the list no longer offers it
    page.get_by_role("link", name="Review queue").click()
    expect(page.locator(".pending")).to_contain_text("lost_or_stolen → security")
    expect(page.locator(".pending")).to_contain_text(f"4/{PENDING_MIN_EXAMPLES} examples")
    page.get_by_role("link", name=re.compile("^Proposed intents")).click()
    expect(page.locator("li.proposal", has_text="stolen, phone, station")).to_have_count(0)
    context.close()


def test_confirm_selected_queries(site: Site, browser: Any) -> None:
    context, page = open_page(browser, site)
    open_proposal(page, site, "esim")
    first, second, third = GROUPS["esim"]
    # no intent yet: nothing to confirm into
    expect(page.get_by_role("button", name=re.compile("^Confirm"))).to_have_count(0)
    expect(page.locator(".members .note")).to_contain_text("Name it or merge it into an intent")

    form = page.locator("#name-form")
    form.get_by_label("Name", exact=True).fill("esim_transfer")
    form.get_by_label("Route").fill("devices")
    submitted(page, form.get_by_role("button", name="Name it").click)  # confirm-all left unticked
    expect(page.locator("#status")).to_have_text("Named it esim_transfer: a pending intent now.")
    assert discovery_feedback(site, "esim") == {}

    # nothing ticked: said, nothing stored
    answer = submitted(page, page.get_by_role("button", name="Confirm selected as esim_transfer").click)
    assert answer.status == 422
    expect(page.locator("#error")).to_have_text("Tick the queries to confirm first (or confirm them all).")

    page.locator("li.member", has_text=first).get_by_role("checkbox").check()
    page.locator("li.member", has_text=third).get_by_role("checkbox").check()
    submitted(page, page.get_by_role("button", name="Confirm selected as esim_transfer").click)
    expect(page.locator("#status")).to_have_text("Confirmed 2 queries as esim_transfer.")
    expect(page.locator("li.member")).to_have_count(2 + 1)  # one to review, two among the decided
    expect(page.locator("#members-form li.member")).to_have_text([re.compile(re.escape(second))])
    expect(page.locator(".counts")).to_have_text("1 to review · 2 confirmed · 0 removed")

    assert discovery_feedback(site, "esim") == {
        first: ("esim_transfer", "discovery"),
        third: ("esim_transfer", "discovery"),
    }
    url = site.settings.database_url
    assert states(url, site.proposals["esim"]) == {first: "confirmed", second: "member", third: "confirmed"}
    context.close()


def test_remove_selected_queries(site: Site, browser: Any) -> None:
    context, page = open_page(browser, site)
    open_proposal(page, site, "roaming")
    spain = page.locator("li.member", has_text=SPAIN)
    expect(spain).to_have_count(1)  # the text as typed, not markup
    assert page.locator("main b, main script").count() == 0

    answer = submitted(page, page.get_by_role("button", name="Remove selected").click)
    assert answer.status == 422
    expect(page.locator("#error")).to_have_text("Tick the queries to remove first.")

    kept = GROUPS["roaming"][2]
    spain.get_by_role("checkbox").check()
    page.locator("li.member", has_text=GROUPS["roaming"][1]).get_by_role("checkbox").check()
    submitted(page, page.get_by_role("button", name="Remove selected").click)
    expect(page.locator("#status")).to_have_text("Removed 2 queries: a later run will not add them back.")
    expect(page.locator("#members-form li.member")).to_have_count(1)
    expect(page.locator("#members-form li.member")).to_contain_text(kept)
    expect(page.locator(".counts")).to_have_text("1 to review · 0 confirmed · 2 removed")
    expect(page.locator("#proposal-state")).to_have_text("Open: waiting for a decision")

    url = site.settings.database_url
    assert states(url, site.proposals["roaming"]) == {
        SPAIN: "removed",
        GROUPS["roaming"][1]: "removed",
        kept: "member",
    }
    assert discovery_feedback(site, "roaming") == {}  # removing gives no label
    context.close()


def test_merge_into_an_existing_intent(site: Site, browser: Any) -> None:
    context, page = open_page(browser, site)
    open_proposal(page, site, "wifi")
    form = page.locator("#merge-form")
    expect(form.get_by_label("Intent")).to_have_value("no_signal")  # the nearest intent, preselected
    options = form.get_by_label("Intent").locator("option").all_inner_texts()
    assert {"no_signal → technical_support", "bill_explanation → billing"} <= set(options)

    # an intent that is not ours (a stale or forged choice): refused, said plainly
    form.get_by_label("Intent").evaluate(
        "s => s.add(new Option('teleportation', 'teleportation', true, true))"
    )
    answer = submitted(page, form.get_by_role("button", name="Merge").click)
    assert answer.status == 422
    expect(page.locator("#error")).to_have_text(
        "'teleportation' is not one of our intents (any more): pick one from the list."
    )
    assert stored(site.settings.database_url, site.proposals["wifi"]).status == "open"

    form.get_by_label("Intent").select_option("no_signal")
    form.get_by_label("Also confirm all 3 of its queries as examples of it").check()
    submitted(page, form.get_by_role("button", name="Merge").click)
    expect(page.locator("#status")).to_have_text(
        "Merged into no_signal. 3 queries confirmed as its examples."
    )
    expect(page.locator("#proposal-state")).to_have_text("Merged into no_signal")
    expect(page.locator(".counts")).to_have_text("0 to review · 3 confirmed · 0 removed")

    proposal = stored(site.settings.database_url, site.proposals["wifi"])
    assert (proposal.status, proposal.intent) == ("merged", "no_signal")
    assert discovery_feedback(site, "wifi") == dict.fromkeys(GROUPS["wifi"], ("no_signal", "discovery"))
    assert "no_signal" not in Registry(site.settings.registry_dir).taxonomy().changes.pending
    context.close()


def test_dismiss_a_proposal(site: Site, browser: Any) -> None:
    context, page = open_page(browser, site)
    open_proposal(page, site, "parking")
    submitted(page, page.locator("#dismiss-form").get_by_role("button", name="Dismiss").click)
    assert page.url == f"{site.base}/review/proposals?done=dismissed"
    expect(page.locator("#status")).to_have_text(
        "Dismissed: it stays hidden unless a later run finds it much larger."
    )
    expect(page.locator("li.proposal", has_text="parking, shop")).to_have_count(0)

    page.get_by_role("navigation", name="Proposals by status").get_by_role("link", name="dismissed").click()
    card = page.locator("li.proposal", has_text="parking, shop")
    expect(card.locator(".state")).to_have_text("Dismissed: not an intent")
    card.get_by_role("link").first.click()
    expect(page.locator("#dismiss-form")).to_have_count(0)  # decided; it may still be named or merged

    proposal = stored(site.settings.database_url, site.proposals["parking"])
    assert (proposal.status, proposal.dismissed_size) == ("dismissed", 2)
    assert discovery_feedback(site, "parking") == {}
    context.close()


# -- without a browser: sessions, CSRF, unknown ids ---------------------------------------------------


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html[:500]
    return match.group(1)


def test_the_proposal_pages_need_a_session_and_the_forms_token(site: Site) -> None:
    proposal = site.proposals["roaming"]
    before = stored(site.settings.database_url, proposal)
    with httpx.Client(base_url=site.base, timeout=10) as client:
        for path in ("/review/proposals", f"/review/proposals/{proposal}"):
            r = client.get(path)
            assert (r.status_code, r.headers["location"]) == (303, "/review/login")
        assert client.post(f"/review/proposals/{proposal}/dismiss").status_code == 403

        login = client.get("/review/login")
        r = client.post("/review/login", data={"token": ALICE, "csrf": _csrf(login.text)})
        assert r.status_code == 303
        page = client.get(f"/review/proposals/{proposal}")
        assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
        assert "&lt;b&gt;roaming&lt;/b&gt;" in page.text and "<b>" not in page.text
        for forged in ({}, {"csrf": "forged"}):
            r = client.post(f"/review/proposals/{proposal}/dismiss", data=forged)
            assert r.status_code == 403, forged
        after = stored(site.settings.database_url, proposal)
        assert (after.status, after.counts()) == (before.status, before.counts())

        csrf = _csrf(page.text)
        for missing in ("0c7d6a51-0000-4000-8000-000000000000", "not%20an%20id"):
            r = client.get(f"/review/proposals/{missing}")
            assert r.status_code == 404 and "There is no proposal with this id" in r.text
            r = client.post(f"/review/proposals/{missing}/dismiss", data={"csrf": csrf})
            assert r.status_code == 404 and "There is no proposal with this id" in r.text
        r = client.get("/review/proposals?status=maybe")
        assert r.status_code == 200 and "unknown status &#39;maybe&#39;; showing open" in r.text
        # a query that is not this proposal's: refused, nothing changed
        other = site.ids[GROUPS["esim"][1]]
        r = client.post(f"/review/proposals/{proposal}/remove", data={"csrf": csrf, "request_id": other})
        assert r.status_code == 422 and "not in this proposal" in r.text
        assert stored(site.settings.database_url, proposal).counts() == before.counts()
