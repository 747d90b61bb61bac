"""The dashboard in a real browser (headless Chromium driven by Playwright): what a person sees equals what the
database holds. Skipped, with the reason, only where Chromium or Playwright cannot be installed."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from tests.support.web import ADMIN_TOKEN, BIG_USER, MODELS, READ_TOKEN, totals

CHROMIUM = os.environ.get("DSPY_TOKENS_TEST_CHROMIUM", "/usr/bin/chromium")
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install -e .[dev])")
if not shutil.which(CHROMIUM):
    pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install -y chromium chromium-driver)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless=new"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser, sqlite_served):
    """A fresh browser page; console errors and page errors are collected and must stay empty."""
    context = browser.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.errors = errors
    yield tab
    context.close()


def log_in(page, served, token):
    page.goto(served.url)
    assert page.url.endswith("/login")
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")


def week_days():
    today = datetime.now(timezone.utc).date()
    return [today - timedelta(days=6 - i) for i in range(7)]


class TestWhatAPersonSees:
    def test_a_wrong_token_shows_the_login_again(self, page, sqlite_served):
        """The login refuses a wrong token and says so; the dashboard stays out of reach."""
        log_in(page, sqlite_served, "not-the-token-at-all")
        assert page.locator("#login-error").inner_text() == "That token is not valid."
        page.goto(sqlite_served.url)
        assert page.url.endswith("/login")
        response = page.request.get(sqlite_served.url + "api/usage", headers={"Authorization": "Bearer nope"})
        assert response.status == 401
        assert page.errors == []

    def test_cards_chart_and_tables_equal_the_rows(self, page, sqlite_served, sqlite_seeded, tmp_path):
        """7 days: the cards are the rows' totals, one bar per day with that day's tokens (the segments add up),
        the cost view likewise, the by-model table, and no console errors."""
        log_in(page, sqlite_served, ADMIN_TOKEN)
        page.goto(sqlite_served.url + "?period=7d")
        page.wait_for_selector("svg.chart-tokens rect.segment")
        expected = totals(sqlite_seeded.rows)
        card = lambda name: page.locator(f'[data-card="{name}"]')  # noqa: E731
        assert int(card("tokens").get_attribute("data-value")) == expected["total_tokens"]
        assert card("tokens").locator(".value").inner_text() == f"{expected['total_tokens']:,}"
        assert int(card("calls").get_attribute("data-value")) == expected["calls"]
        assert Decimal(card("cost").get_attribute("data-value")) == expected["cost_usd"]
        assert int(card("active_users").get_attribute("data-value")) == expected["active_users"]
        assert int(card("unknown_cost_calls").get_attribute("data-value")) == expected["unknown_cost_calls"]

        for metric, daily in (("tokens", sqlite_seeded.daily("tokens")), ("cost", sqlite_seeded.daily("cost"))):
            if metric == "cost":
                page.click("#show-cost")
            assert page.locator(f"svg.chart-{metric}").is_visible()
            bars = page.locator(f"svg.chart-{metric} g.bar")
            assert bars.count() == 7
            for i, day in enumerate(week_days()):
                bar = bars.nth(i)
                assert bar.get_attribute("data-day") == day.isoformat()
                assert Decimal(bar.get_attribute("data-value")) == Decimal(daily.get(day, 0))
                parts = [Decimal(v) for v in bar.locator("rect.segment").evaluate_all(
                    "rects => rects.map(r => r.dataset.value)")]
                assert sum(parts, Decimal(0)) == Decimal(daily.get(day, 0))
                if daily.get(day):
                    assert bar.locator("rect.segment").first.bounding_box()["height"] > 0
        assert not page.locator("svg.chart-tokens").is_visible()
        assert set(page.locator("#legend li").evaluate_all("items => items.map(i => i.dataset.model)")) == set(MODELS)

        rows = page.locator("#by-model tbody tr")
        shown = {rows.nth(i).get_attribute("data-key"): int(rows.nth(i).get_attribute("data-tokens"))
                 for i in range(rows.count())}
        assert shown == {m: totals([r for r in sqlite_seeded.rows if r["model"] == m])["total_tokens"]
                         for m in MODELS}
        assert str(BIG_USER) in page.locator("#top-users").inner_text()
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        assert page.errors == []

    def test_a_session_drills_down_to_its_calls(self, page, sqlite_served, sqlite_seeded):
        """A recent session opens on its own page with one line per call, in call order."""
        log_in(page, sqlite_served, ADMIN_TOKEN)
        page.fill("#session-lookup input", sqlite_seeded.sessions[0])
        page.click("#session-lookup button")
        page.wait_for_selector("#session-calls")
        mine = sorted((r for r in sqlite_seeded.rows if r["session_id"] == sqlite_seeded.sessions[0]),
                      key=lambda r: r["call_index"])
        lines = page.locator("#session-calls tbody tr")
        assert lines.count() == len(mine)
        assert [int(lines.nth(i).get_attribute("data-total-tokens")) for i in range(lines.count())] == [
            r["total_tokens"] for r in mine]
        assert page.errors == []

    def test_the_export_button_downloads_every_row_of_the_period(self, page, sqlite_served, sqlite_seeded):
        """CSV export from the page: a download with a header and one line per call of the period."""
        log_in(page, sqlite_served, ADMIN_TOKEN)
        page.goto(sqlite_served.url + "?period=7d")
        with page.expect_download() as info:
            page.click("#export-csv")
        download = info.value
        assert download.suggested_filename.endswith(".csv")
        lines = open(download.path(), encoding="utf-8").read().splitlines()
        assert lines[0].startswith("id,call_uuid,session_id")
        assert len(lines) - 1 == len(sqlite_seeded.rows)
        assert page.errors == []

    def test_the_cleanup_form_previews_a_dry_run(self, page, sqlite_served, sqlite_seeded):
        """The admin's cleanup form (dry run by default) reports what it would delete and deletes nothing."""
        log_in(page, sqlite_served, ADMIN_TOKEN)
        page.fill('#cleanup-form input[name="older_than_days"]', "2")
        page.click("#cleanup-form button[type=submit]")
        result = page.locator("#cleanup-result")
        cutoff = (datetime.now(timezone.utc) - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
        assert result.get_attribute("data-dry-run") == "true"
        assert int(result.get_attribute("data-rows")) == len(sqlite_seeded.between(until=cutoff)) > 0
        page.goto(sqlite_served.url + "?period=7d")
        assert int(page.locator('[data-card="calls"]').get_attribute("data-value")) == len(sqlite_seeded.rows)
        assert page.errors == []

    def test_the_read_token_sees_pseudonyms_and_no_admin_tools(self, page, sqlite_served):
        """With the read token: no ids, no export and no cleanup."""
        log_in(page, sqlite_served, READ_TOKEN)
        page.wait_for_selector("#cards")
        assert str(BIG_USER) not in page.content()
        assert page.locator("#export").count() == 0 and page.locator("#cleanup").count() == 0
        assert page.locator(".badge").get_attribute("data-level") == "read"
        assert page.errors == []

    def test_the_dark_theme_switches_and_is_remembered(self, page, sqlite_served):
        """The theme toggle flips light and dark (the page's colours change) and survives a reload."""
        log_in(page, sqlite_served, ADMIN_TOKEN)
        page.wait_for_selector("#cards")
        before = page.evaluate("document.documentElement.dataset.theme")
        background = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
        page.click("#theme-toggle")
        after = page.evaluate("document.documentElement.dataset.theme")
        assert {before, after} == {"light", "dark"}
        assert page.evaluate("getComputedStyle(document.documentElement).backgroundColor") != background
        page.reload()
        assert page.evaluate("document.documentElement.dataset.theme") == after
        assert page.errors == []
