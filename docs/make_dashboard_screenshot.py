"""Regenerate docs/dashboard.png: 30 days of made-up usage (three models, five features, 40 users in 6 servers)
stored through ``Store.write_batch``, the app served on a free port, and headless Chromium (Playwright) taking
the picture. ``python docs/make_dashboard_screenshot.py [--dark]``."""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import threading
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

from playwright.sync_api import sync_playwright

from dspy_tokens.store import Store, UsageRow
from dspy_tokens.web import create_app, serve_in_background

TOKEN = "screenshot-admin-token-0123456789"
MODELS = (("openai/gpt-4o-mini", Decimal("0.00000015"), Decimal("0.0000006"), 0.62),
          ("anthropic/claude-sonnet-4", Decimal("0.000003"), Decimal("0.000015"), 0.28),
          ("groq/moonshotai/kimi-k2-instruct", None, None, 0.10))
FEATURES = ("general_conversation", "setup_full_guide", "summarize", "command_extract_create_params", "search")


def rows(now: datetime) -> list[UsageRow]:
    rnd = random.Random(4)
    out = []
    for day in range(30):
        midnight = (now - timedelta(days=29 - day)).replace(hour=0, minute=0, second=0, microsecond=0)
        for i in range(int(90 + 40 * rnd.random() + day * 2)):
            moment = midnight + timedelta(seconds=rnd.random() * 86400)
            if moment > now:
                continue
            r = rnd.random()
            model, rate_in, rate_out, _ = MODELS[0] if r < 0.62 else MODELS[1] if r < 0.9 else MODELS[2]
            prompt, completion = rnd.randrange(300, 4000), rnd.randrange(40, 900)
            cost = None if rate_in is None else prompt * rate_in + completion * rate_out
            user = 100000000000000000 + rnd.randrange(40) * 7919
            out.append(UsageRow(uuid.uuid4().hex, f"s-{day}-{i // 3}", i % 3, user, 900000000000000000 + user % 6,
                                None, rnd.choice(FEATURES), "ChainOfThought", model, None, prompt, completion,
                                prompt + completion, int(prompt * rnd.random() * 0.4), 0, cost,
                                "price_map" if cost is not None else "unknown", False, True, None,
                                rnd.randrange(300, 4000), moment))
    return out


def main() -> None:
    theme = "dark" if "--dark" in sys.argv else "light"
    folder = Path(tempfile.mkdtemp())
    url = f"sqlite:///{folder / 'usage.db'}"
    Store(url).write_batch(rows(datetime.now(timezone.utc)))
    ready, stop, box = threading.Event(), threading.Event(), {}

    def serve():
        async def run():
            web = await serve_in_background(create_app(url, admin_token=TOKEN), port=0)
            box["url"] = web.url
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)
            await web.stop()
        asyncio.run(run())

    threading.Thread(target=serve, daemon=True).start()
    ready.wait(30)
    out = Path(__file__).with_name("dashboard.png" if theme == "light" else "dashboard-dark.png")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--headless=new"])
        page = browser.new_page(viewport={"width": 1320, "height": 900}, color_scheme=theme, device_scale_factor=1)
        page.goto(box["url"] + "login")
        page.fill("#token", TOKEN)
        page.click("#login-form button[type=submit]")
        page.goto(box["url"] + "?period=30d")
        page.wait_for_selector("svg.chart-tokens rect.segment")
        page.screenshot(path=str(out), full_page=True)
        browser.close()
    stop.set()
    print(out)


if __name__ == "__main__":
    main()
