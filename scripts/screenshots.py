"""`make screenshots`: the README's pictures of the relay's status page and the mock Rocket.Chat, taken by the tests'
headless Chromium (tests/browser.py).

It wires the mock Rocket.Chat and the relay together as scripts/run-demo.sh does (free loopback ports, state in
memory), sends test-alert.json and then a copy with its last alert resolved (the first still firing), and saves
docs/screenshots/status-page.png (1280×900), status-page-phone.png (390×844) and mock-rocketchat.png (1280×900).
While the relay serves no page on GET /, only the mock's picture is taken, and the script says so.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mock_server import DEFAULT_HOOK_NAMES  # noqa: E402
from tests.browser import DESKTOP_WINDOW, PHONE_VIEWPORT, chromium, missing_browser, set_viewport  # noqa: E402
from tests.helpers import (  # noqa: E402
    DEV_SERVER_COMMAND, PYTHON, ManagedProcess, Relay, direct_session, free_port, relay_environ, wait_until,
    wait_until_serving,
)

SCREENSHOTS = REPO / "docs" / "screenshots"
TEST_ALERT = REPO / "test-alert.json"
FIRED_BEFORE = datetime.timedelta(minutes=20)  # how long before the pictures the first test alert started
RESOLVED_AFTER = datetime.timedelta(minutes=12)  # how long the resolved test alert "fired"
WAIT_SECONDS = 15.0
# The status page is live and has swapped its live part in once (so it counts itself among the live viewers).
STATUS_PAGE_LIVE = ("return document.body.dataset.liveState === 'live' "
                    "&& Number(document.body.dataset.refreshes) >= 1")
HTTP_TIMEOUT_SECONDS = 5.0


def _timestamp(moment: datetime.datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def as_alertmanager_sends_it(notification: dict, now: datetime.datetime) -> dict:
    """test-alert.json as a recent notification: the first alert started FIRED_BEFORE now (the others as long after
    it as in the file, so the page says "firing for 20m", not since 2024), with the groupKey and fingerprints
    Alertmanager sends (by which the relay knows an alert it already posted)."""
    recent = copy.deepcopy(notification)
    recent.setdefault("groupKey", "{}:{}")
    first = _parse(recent["alerts"][0]["startsAt"])
    for alert in recent["alerts"]:
        alert["startsAt"] = _timestamp(now - FIRED_BEFORE + (_parse(alert["startsAt"]) - first))
        labels = json.dumps(alert["labels"], sort_keys=True).encode()
        alert.setdefault("fingerprint", hashlib.sha256(labels).hexdigest()[:16])
    return recent


def _parse(timestamp: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def resolved_copy(notification: dict) -> dict:
    """The group's next notification: its last alert resolved RESOLVED_AFTER after it started, the others still firing
    (so the page shows both a firing and a recently resolved alert)."""
    following = copy.deepcopy(notification)
    last = following["alerts"][-1]
    last["status"] = "resolved"
    last["endsAt"] = _timestamp(_parse(last["startsAt"]) + RESOLVED_AFTER)
    if all(alert["status"] == "resolved" for alert in following["alerts"]):
        following["status"] = "resolved"  # as Alertmanager says of a group: firing while any of its alerts fires
    return following


def save_png(png: bytes, name: str) -> Path:
    """Write a screenshot under docs/screenshots (whole, or not at all)."""
    path = SCREENSHOTS / name
    partial = path.with_suffix(".png.partial")
    partial.write_bytes(png)
    partial.replace(path)
    return path


def capture(driver, url: str, name: str, size: tuple[int, int], *, ready_text: str, mobile: bool = False,
            settled: str = "", whole_page: bool = False) -> Path:
    """Open url in a viewport of size, wait until ready_text is on the page (and the script settled returns true),
    and save what it shows (whole_page: the viewport made as tall as the page, so all of it is in the picture)."""
    set_viewport(driver, *size, mobile=mobile)
    driver.get(url)
    wait_until(lambda: ready_text in driver.execute_script("return document.body ? document.body.innerText : ''"),
               WAIT_SECONDS, f"{ready_text!r} on {url}")
    if settled:
        wait_until(lambda: driver.execute_script(settled), WAIT_SECONDS, f"{settled!r} on {url}")
    if whole_page:
        height = driver.execute_script("return document.documentElement.scrollHeight")
        set_viewport(driver, size[0], max(size[1], height), mobile=mobile)
    driver.execute_script("window.scrollTo(0, 0)")
    return save_png(driver.get_screenshot_as_png(), name)


def main() -> int:
    reason = missing_browser()
    if reason:
        print(f"screenshots: {reason}", file=sys.stderr)
        return 1
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    notification = as_alertmanager_sends_it(json.loads(TEST_ALERT.read_text()),
                                            datetime.datetime.now(datetime.timezone.utc))
    expected_hooks = sorted({alert["labels"]["severity"] for alert in notification["alerts"]})
    http = direct_session()
    with tempfile.TemporaryDirectory(prefix="rcwebhook-screenshots-") as scratch:
        output_dir = Path(scratch)
        mock_port, relay_port = free_port(), free_port()
        mock_url = f"http://127.0.0.1:{mock_port}"
        mock = ManagedProcess([PYTHON, "mock_server.py", "--host", "127.0.0.1", "--port", str(mock_port), "--quiet"],
                              env=relay_environ(), cwd=REPO, output_dir=output_dir, name="mock")
        relay = None
        try:
            wait_until_serving(mock, f"{mock_url}/_mock/health", WAIT_SECONDS, http=http, name="the mock Rocket.Chat")
            # The mock's default hooks, one per severity, as `make run` wires them; state in memory only.
            hooks = {f"ROCKETCHAT_WEBHOOK_{name.upper()}": f"{mock_url}/hooks/{name}/{name}-token"
                     for name in DEFAULT_HOOK_NAMES}
            environ = relay_environ({"HOST": "127.0.0.1", "PORT": str(relay_port), "ROUTES_FILE": "",
                                     "STATE_URL": "memory://", **hooks})
            relay = Relay.start(DEV_SERVER_COMMAND, environ, output_dir=output_dir)
            # The first notification reaches every severity's hook; the second at least the resolved alert's
            # (the alerts still firing may be held back as duplicates).
            following = resolved_copy(notification)
            resolved_hooks = [alert["labels"]["severity"] for alert in following["alerts"]
                              if alert["status"] == "resolved"]
            for step, (body, hooks_to_reach) in enumerate(((notification, expected_hooks),
                                                           (following, resolved_hooks)), start=1):
                response = relay.post_webhook(json.dumps(body))
                if response.status_code != 200:
                    raise SystemExit(f"screenshots: the relay answered {response.status_code}: {response.text[:300]}")

                def delivered(count=step, names=hooks_to_reach) -> bool:
                    hooks_now = http.get(f"{mock_url}/_mock/messages", timeout=HTTP_TIMEOUT_SECONDS).json()["hooks"]
                    return all(len(hooks_now[name]) >= count for name in names)

                wait_until(delivered, WAIT_SECONDS, f"notification {step} in the mock's {', '.join(hooks_to_reach)}")
            status_page = http.get(f"{relay.base_url}/", timeout=HTTP_TIMEOUT_SECONDS)
            first_alert = notification["alerts"][0]["labels"]["alertname"]
            saved = []
            with chromium(DESKTOP_WINDOW) as driver:
                if status_page.status_code == 200:
                    saved.append(capture(driver, f"{relay.base_url}/", "status-page.png", DESKTOP_WINDOW,
                                         ready_text=first_alert, settled=STATUS_PAGE_LIVE, whole_page=True))
                    saved.append(capture(driver, f"{relay.base_url}/", "status-page-phone.png", PHONE_VIEWPORT,
                                         ready_text=first_alert, settled=STATUS_PAGE_LIVE, mobile=True))
                else:
                    print(f"screenshots: the relay answers GET / with {status_page.status_code}: no status page yet, "
                          "so only the mock's picture is taken", file=sys.stderr)
                saved.append(capture(driver, f"{mock_url}/", "mock-rocketchat.png", DESKTOP_WINDOW,
                                     ready_text=first_alert))
        except BaseException:
            if relay is not None:
                print(f"screenshots: the relay's log:\n{relay.log()[-4000:]}", file=sys.stderr)
            raise
        finally:
            if relay is not None:
                relay.stop()
            mock.stop()
            http.close()
    for path in saved:
        print(f"{path.relative_to(REPO)} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
