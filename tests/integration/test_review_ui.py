"""The review page in Debian's headless Chromium: a real worker, RabbitMQ, PostgreSQL and
``python -m worker review-ui``. A review verdict appears, hostile text shows as text, a
key press decides it (``source: human`` on the verdicts exchange), and a reviewer of
another tenant can neither read nor decide it. Screenshots go to
``$MODERATION_SCREENSHOTS`` (default: the test's tmp dir)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from queue import Empty

import pytest

from worker import _db
from worker.client import ModerationClient
from worker.models import EarlierDecision
from worker.reviews import ReviewItem, ReviewStore

from ..conftest import ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (shutil.which("chromium") and shutil.which("chromedriver")),
        reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
        "chromium-driver; .ci/run installs them)",
    ),
]

XSS = '<img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>'
LOGINS = {
    "ana": {"secret": "ana-secret", "tenants": ["shop"]},
    "eve": {"secret": "eve-secret", "tenants": ["forum"]},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def review_ui(worker_env: dict[str, str], database_url: str, tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    env = {
        **worker_env,
        "MODERATION_DATABASE_URL": database_url,
        "MODERATION_REVIEW_LOGINS": json.dumps(LOGINS),
    }
    log = (tmp_path / "review-ui.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "review-ui", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "login", timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("review-ui did not start: " + (tmp_path / "review-ui.log").read_text())
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1100,900",
        "--disable-gpu",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.implicitly_wait(2)
    yield driver
    driver.quit()


def _screenshot(driver: object, tmp_path: Path, name: str) -> Path:
    directory = Path(os.environ.get("MODERATION_SCREENSHOTS", tmp_path))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    driver.save_screenshot(str(path))  # type: ignore[attr-defined]
    print(f"screenshot: {path}")
    return path


def _login(driver: object, url: str, name: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url + "login")  # type: ignore[attr-defined]
    driver.find_element(By.NAME, "reviewer").send_keys(name)  # type: ignore[attr-defined]
    driver.find_element(By.NAME, "secret").send_keys(LOGINS[name]["secret"])  # type: ignore[attr-defined]
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()  # type: ignore[attr-defined]


def test_a_moderator_reviews_on_the_page(
    start_worker, client: ModerationClient, database_url: str, review_ui: str, browser, tmp_path
):
    from selenium.webdriver.common.by import By

    _db.upgrade(database_url)  # before the worker: it refuses an older schema
    start_worker(MODERATION_DATABASE_URL=database_url, MODERATION_OVERRIDES_REFRESH_S="0.2")
    hostile = f"fuck you {XSS} and everyone like you"
    with client.subscribe("#") as verdicts:
        client.publish(
            {
                "id": "x1",
                "text": hostile,
                "tenant": "shop",
                "author": {"id": "u1"},
                "context": "a thread about the match",
            }
        )
        client.publish({"id": "x2", "text": "you are such a clown, honestly", "tenant": "shop"})
        got = {v.id: v for v in verdicts.drain(2, timeout=30)}
        assert {v.action for v in got.values()} == {"review"}
        # and one the policy changed: a person allowed the text under an older version
        earlier = EarlierDecision(
            decision="allow", reviewer="bo", request_id="x0", policy_version="0ld0ld0ld0ld"
        )
        changed = got["x2"].model_copy(update={"id": "x3", "earlier_decision": earlier})
        store = ReviewStore(database_url)
        store.record([ReviewItem(changed, "you clown", None, "d3", time.time() + 60)])
        store.close()

        _login(browser, review_ui, "ana")
        deadline = time.monotonic() + 20
        while len(browser.find_elements(By.CSS_SELECTOR, ".item")) < 3:
            assert time.monotonic() < deadline, "the review items never appeared"
            time.sleep(0.3)
            browser.refresh()
        item = browser.find_element(By.CSS_SELECTOR, '.item[data-id="x1"]')
        text = item.find_element(By.CSS_SELECTOR, ".text")
        assert text.text == hostile  # the markup shows as text...
        assert text.find_elements(By.TAG_NAME, "img") == []  # ...and is not markup
        assert text.find_elements(By.TAG_NAME, "script") == []
        assert browser.title != "pwned"
        assert [m.text for m in text.find_elements(By.TAG_NAME, "mark")] == ["fuck you"]
        assert "a thread about the match" in item.text and "author u1" in item.text
        note = browser.find_element(By.CSS_SELECTOR, '.item[data-id="x3"] .changed').text
        assert "bo decided allow" in note and "0ld0ld0ld0ld" in note and "decides review" in note
        _screenshot(browser, tmp_path, "review-queue")

        # the oldest is the current one; "a" allows it
        current = browser.find_element(By.CSS_SELECTOR, ".item.current").get_attribute("data-id")
        browser.find_element(By.TAG_NAME, "body").send_keys("a")
        (final,) = verdicts.drain(1, timeout=30)
        assert final.id == current and final.source == "human" and final.action == "allow"
        assert "reviewer ana" in (final.reason or "")
        browser.refresh()  # the page came back before the worker stored the decision
        left = [e.get_attribute("data-id") for e in browser.find_elements(By.CSS_SELECTOR, ".item")]
        assert current != "x3" and set(left) == {"x1", "x2", "x3"} - {current}
        assert left[-1] == "x3"  # oldest first
        _screenshot(browser, tmp_path, "review-queue-after")

        # another tenant's reviewer sees none of it and cannot decide it
        browser.get(review_ui + "logout")
        _login(browser, review_ui, "eve")
        assert browser.find_elements(By.CSS_SELECTOR, ".item") == []
        assert "Nothing waiting" in browser.find_element(By.TAG_NAME, "main").text
        browser.get(review_ui + "?tenant=shop")
        assert "Not your tenant" in browser.page_source
        status = browser.execute_script(
            "return fetch('decide', {method: 'POST', body: new URLSearchParams("
            "{id: arguments[0], tenant: 'shop', decision: 'allow'})}).then(r => r.status)",
            left[0],
        )
        assert status == 403
        with pytest.raises(Empty):  # and no verdict came for it
            verdicts.get(timeout=2.0)
