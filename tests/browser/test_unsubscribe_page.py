"""The one-click unsubscribe link of an e-mail, opened in real headless Chromium: the
page asks, changes nothing until its button is clicked, then the category's e-mail is
off in the user's preferences."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from herald import unsubscribe
from tests.browser.test_demo_page import CHROMIUM, DRIVER, browser, shot, wait  # noqa: F401

pytestmark = [
    pytest.mark.browser,
    pytest.mark.usefixtures("clean"),
    pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium and chromedriver needed "
                       "(Debian packages chromium, chromium-driver; .ci/run installs them)"),
]
PREFS = "/api/users/alice/preferences"


def test_clicking_the_button_of_the_unsubscribe_page_turns_the_category_off(
        browser, api, api_url, config):  # noqa: F811 (the browser fixture, imported)
    link = unsubscribe.url(config.replace(api_url=api_url), "alice", "marketing")
    page = browser()
    page.get(link)
    assert page.find_element(By.TAG_NAME, "h1").text == "Stop marketing e-mails from Herald?"
    shot(page, "unsubscribe-ask")
    assert api.get(PREFS).json()["email"]["marketing"] is True  # opening changed nothing

    page.find_element(By.ID, "unsubscribe").click()
    wait(page, 10).until(lambda d: d.find_elements(By.ID, "done"))
    assert "no more marketing e-mails from Herald" in page.find_element(By.ID, "message").text
    shot(page, "unsubscribe-done")
    shown = api.get(PREFS).json()
    assert shown["email"]["marketing"] is False
    assert shown["email"]["general"] is True and shown["inapp"]["marketing"] is True


def test_a_tampered_link_shows_why_and_offers_no_button(browser, api, api_url, config):  # noqa: F811
    link = unsubscribe.url(config.replace(api_url=api_url), "alice", "marketing")
    page = browser()
    page.get(link[:-3])
    assert page.find_element(By.TAG_NAME, "h1").text == "This unsubscribe link does not work"
    assert not page.find_elements(By.ID, "unsubscribe")
    assert api.get(PREFS).json()["email"]["marketing"] is True
