"""A real headless Chromium on a page of `aslfr serve`, for the browser tests and benchmark.

    with Browser(site_folder) as b:        # serves the folder on a free localhost port
        page = b.open("index.html")        # every request outside the page's origin is blocked
        page.evaluate("...")
        b.blocked, b.console_errors        # what it tried to fetch elsewhere; what it logged as errors

Chromium is the system's (Debian's `chromium`: `make browser` installs it), driven by Playwright
for Python, which downloads no browser of its own. Extra Chromium flags (the fake camera's, say)
go in `args`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-default-apps", "--disable-extensions", "--mute-audio"]


def chromium_path() -> Path | None:
    env = os.environ.get("ASLFR_CHROMIUM")
    if env:
        return Path(env)
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def available() -> str | None:
    """None when the browser tests can run here, else why not."""
    import importlib.util

    if importlib.util.find_spec("playwright") is None:
        return "Playwright for Python is not installed (pip install -e '.[web]')"
    if chromium_path() is None:
        return "no Chromium found (make browser installs Debian's chromium; or set ASLFR_CHROMIUM)"
    return None


class Browser:
    def __init__(self, folder: Path | None, args: list[str] | None = None, timeout_s: float = 120, check: bool = True,
                 url: str | None = None) -> None:
        """`folder`: served here on a free port; or None and `url`: a server already running."""
        self.folder, self.args, self.timeout_ms, self.check = folder, list(args or []), timeout_s * 1e3, check
        self.origin = url.rstrip("/") if url else None
        self.server = None
        self.blocked: list[str] = []
        self.console_errors: list[str] = []
        self.console: list[str] = []

    def __enter__(self) -> "Browser":
        from playwright.sync_api import sync_playwright

        from aslfr.web import make_server

        if self.origin is None:
            self.server = make_server(Path(self.folder), 0, check=self.check)
            self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
            threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        self._profile = tempfile.mkdtemp(prefix="aslfr-chromium-")
        self._pw = sync_playwright().start()
        self.context = self._pw.chromium.launch_persistent_context(
            self._profile, executable_path=str(chromium_path()), headless=True,
            args=CHROMIUM_FLAGS + self.args, ignore_default_args=["--headless"], viewport={"width": 1200, "height": 820},
            permissions=["camera"])
        self.context.set_default_timeout(self.timeout_ms)
        self.context.route("**/*", self._route)
        return self

    def _route(self, route) -> None:  # noqa: ANN001 - playwright's Route
        url = route.request.url
        if url.startswith(self.origin + "/") or url.startswith(("blob:", "data:")):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort("blockedbyclient")

    def open(self, path: str = "index.html"):  # noqa: ANN201 - playwright's Page
        page = self.context.pages[0] if self.context.pages else self.context.new_page()
        page.on("console", self._on_console)
        page.on("pageerror", lambda e: self.console_errors.append(f"page error: {e}"))
        page.goto(f"{self.origin}/{path}")
        return page

    def _on_console(self, msg) -> None:  # noqa: ANN001
        self.console.append(f"{msg.type}: {msg.text}")
        if msg.type == "error":
            self.console_errors.append(msg.text)

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        try:
            self.context.close()
            self._pw.stop()
        finally:
            if self.server is not None:
                self.server.shutdown()
                self.server.server_close()
            shutil.rmtree(self._profile, ignore_errors=True)


__all__ = ["Browser", "CHROMIUM_FLAGS", "available", "chromium_path"]
