"""Browser tests: Debian's chromium (``/usr/bin/chromium``, the Makefile's APT_PACKAGES) driven by playwright,
against the test bed's Prefect server, which serves its UI (``testbed/bed.py``).

Playwright's own browser download is never used (no ``playwright install``): the browser is the system one,
headless, with ``--no-sandbox`` (the tests run as root, where chromium's sandbox refuses to start). When a test
fails, a screenshot and the page's HTML are saved in its tmp dir and their paths added to its report."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.prefect_worker import worker  # noqa: F401 - a fixture, found by pytest through this import

CHROMIUM = os.environ.get("HELIX_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def prefect_server(bed):
    """The session's Prefect server (tests/conftest.py's), serving its UI at ``.ui_url``."""
    server = bed.prefect()
    assert server.ui, "the test bed's Prefect server serves its UI (testbed/bed.py)"
    return server


@pytest.fixture(scope="module")  # not longer: playwright's sync API keeps an event loop running in this thread
def browser():                   # while it lives, and later tests' asyncio.run() (Prefect, kr8s) would then fail
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no chromium at {CHROMIUM}: `make deps` installs Debian's chromium package "
                    f"(found on PATH: {shutil.which('chromium')})", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, request, tmp_path):
    """A fresh page (its own context: no state between tests). On failure: ``failure.png`` and ``failure.html``
    in the test's tmp dir (see ``pytest_runtest_makereport``)."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    context.set_default_timeout(30_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("response", lambda r: errors.append(_refused(r)) if r.status >= 400 else None)
    request.node._helix_page = (page, tmp_path, errors)
    yield page
    context.close()


def _refused(response) -> str:
    """An API answer the UI got as an error (its toast says only "Something went wrong"): method, URL, status
    and the start of its body."""
    try:
        body = response.text()[:500]
    except Exception as exc:  # noqa: BLE001 - a body that is gone: say so
        body = f"(no body: {exc})"
    return f"{response.request.method} {response.url} -> {response.status}: {body}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    held = getattr(item, "_helix_page", None)
    if not report.failed or held is None or report.when == "teardown":
        return
    page, folder, errors = held
    lines = [f"page: {page.url}"]
    try:
        page.screenshot(path=str(folder / "failure.png"), full_page=True)
        (folder / "failure.html").write_text(page.content())
        lines += [f"screenshot: {folder / 'failure.png'}", f"html: {folder / 'failure.html'}"]
    except Exception as exc:  # noqa: BLE001 - a closed page: say so, keep the report
        lines.append(f"could not save the page: {exc}")
    if errors:
        lines.append("page errors and refused requests: " + " | ".join(errors[-5:]))
    report.sections.append(("browser (on failure)", "\n".join(lines)))
