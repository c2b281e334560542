"""Headless Chromium for the browser tests: Debian's ``chromium`` driven by Playwright.

No browser is downloaded: Playwright launches the executable named by
``ANTIHACK_TEST_CHROMIUM`` (``.ci/run`` installs Debian's package and sets it) or found on
PATH. Without one the browser tests skip, except where ``ANTIHACK_TEST_REQUIRE_BROWSER`` is set
(CI), where they fail.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest
from playwright.sync_api import Browser, sync_playwright


def chromium_path() -> str:
    path = os.environ.get("ANTIHACK_TEST_CHROMIUM") or shutil.which("chromium")
    if path:
        return path
    if os.environ.get("ANTIHACK_TEST_REQUIRE_BROWSER"):
        pytest.fail("no chromium: install Debian's chromium package (.ci/run does)")
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)")


@contextmanager
def chromium(args: Sequence[str] = ()) -> Iterator[Browser]:
    """A headless Chromium; ``args`` are extra command-line switches (e.g. a fake camera)."""
    executable = chromium_path()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox", *args]
        )
        try:
            yield browser
        finally:
            browser.close()
