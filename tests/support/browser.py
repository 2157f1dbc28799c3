"""A real headless browser for the tests: Chromium (Debian's package) driven over the DevTools
protocol, to open a page and report what a person would see: console errors, uncaught
exceptions, requests leaving the file, and where elements sit in the first screenful."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import websockets

from replicator.embedded import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """What the browser saw when it loaded the page."""

    def __init__(self) -> None:
        self.console_errors: list[str] = []
        self.requests: list[str] = []
        self.values: dict[str, Any] = {}
        self.screenshot: bytes = b""


async def open_page(path: Path, expressions: dict[str, str], *, width: int = 1280,
                    height: int = 800) -> Page:
    """Load ``path`` in a fresh headless Chromium window of ``width`` x ``height``; evaluate each
    JavaScript expression (name -> expression) once the page has loaded."""
    assert CHROMIUM, "chromium is not installed"
    port = free_port()
    profile = tempfile.mkdtemp(prefix="replicator-chromium-")
    proc = subprocess.Popen(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-extensions", f"--remote-debugging-port={port}", "--remote-allow-origins=*",
         f"--window-size={width},{height}", f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ws_url = await _page_socket(port)
        async with websockets.connect(ws_url, max_size=None) as ws:
            return await _drive(ws, path, expressions, width, height)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


async def _page_socket(port: int, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                targets = json.loads(r.read())
            page = next(t for t in targets if t.get("type") == "page")
            return str(page["webSocketDebuggerUrl"])
        except (OSError, StopIteration, ValueError):
            if time.monotonic() > deadline:
                raise AssertionError("chromium did not open its DevTools endpoint") from None
            await asyncio.sleep(0.2)


async def _drive(ws: Any, path: Path, expressions: dict[str, str], width: int,
                 height: int) -> Page:
    page = Page()
    ids = itertools.count(1)
    replies: dict[int, Any] = {}
    loaded = asyncio.Event()

    async def receive() -> None:
        async for message in ws:
            event = json.loads(message)
            if "id" in event:
                replies[event["id"]] = event
                continue
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                page.console_errors.append(json.dumps(params.get("args"))[:300])
            elif method == "Runtime.exceptionThrown":
                page.console_errors.append(json.dumps(params.get("exceptionDetails"))[:300])
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                page.console_errors.append(params["entry"].get("text", "")[:300])
            elif method == "Network.requestWillBeSent":
                page.requests.append(params["request"]["url"])
            elif method == "Page.loadEventFired":
                loaded.set()

    async def call(method: str, **params: Any) -> Any:
        n = next(ids)
        await ws.send(json.dumps({"id": n, "method": method, "params": params}))
        deadline = time.monotonic() + 30
        while n not in replies:
            if time.monotonic() > deadline:
                raise AssertionError(f"chromium did not answer {method}")
            await asyncio.sleep(0.02)
        reply = replies.pop(n)
        if "error" in reply:
            raise AssertionError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    reader = asyncio.ensure_future(receive())
    try:
        for domain in ("Runtime", "Log", "Network", "Page"):
            await call(f"{domain}.enable")
        await call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                   deviceScaleFactor=1, mobile=False)
        await call("Page.navigate", url=path.resolve().as_uri())
        await asyncio.wait_for(loaded.wait(), 30)
        for name, expression in expressions.items():
            result = await call("Runtime.evaluate", expression=expression, returnByValue=True)
            page.values[name] = result.get("result", {}).get("value")
        shot = await call("Page.captureScreenshot", format="png")
        page.screenshot = base64.b64decode(shot["data"])
        await asyncio.sleep(0.2)  # late console messages
    finally:
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader
    page.requests = [u for u in page.requests if not u.startswith(("file:", "data:", "about:"))]
    return page
