"""Shared fixtures: the app factory chain (config → app → client) with a recording fake Rocket.Chat client."""

from __future__ import annotations

import json
import pathlib

import pytest

from rcwebhook import config as config_module
from rcwebhook.app import create_app, shutdown
from rcwebhook.client import Outcome, PostResult

ORIGINAL_DEFAULT_STATE_URL = config_module.default_state_url
REPO = pathlib.Path(__file__).resolve().parent.parent
DATA = pathlib.Path(__file__).resolve().parent / "data"
CORPUS = DATA / "corpus"

HOOK_URLS = {
    "critical": "http://rocketchat.test/hooks/critical-id/critical-secret-token",
    "warning": "http://rocketchat.test/hooks/warning-id/warning-secret-token",
    "info": "http://rocketchat.test/hooks/info-id/info-secret-token",
}
BASE_ENVIRON = {
    **{f"ROCKETCHAT_WEBHOOK_{severity.upper()}": url for severity, url in HOOK_URLS.items()},
    # Short, so the tests of failures past the deadline answer quickly.
    "DELIVERY_DEADLINE_SECONDS": "1",
}
DELIVERED = PostResult(Outcome.DELIVERED, 200, "")


class RecordingClient:
    """A fake Rocket.Chat client: records each post and answers from a per-URL script (default: delivered)."""

    def __init__(self):
        self.posts: list[tuple[str, dict]] = []
        self.scripts: dict[str, list[PostResult]] = {}

    def answer(self, url: str, *results: PostResult) -> None:
        self.scripts.setdefault(url, []).extend(results)

    def post(self, url, message, *, timeout_seconds=None):
        json.dumps(message, allow_nan=False)  # what the real client would send must serialise
        self.posts.append((url, message))
        script = self.scripts.get(url)
        return script.pop(0) if script else DELIVERED

    def messages_to(self, severity: str) -> list[dict]:
        return [message for url, message in self.posts if url == HOOK_URLS[severity]]

    def close(self):
        pass


@pytest.fixture
def fake_rocketchat():
    return RecordingClient()


@pytest.fixture(autouse=True)
def state_in_memory_by_default(monkeypatch):
    """Every relay a test builds keeps its state to itself: memory:// unless the test sets STATE_URL (a test of the
    default file's rules calls rcwebhook.config.default_state_url through ORIGINAL_DEFAULT_STATE_URL)."""
    monkeypatch.setattr(config_module, "default_state_url", lambda environ: "memory://")


@pytest.fixture
def environ():
    return dict(BASE_ENVIRON)


@pytest.fixture
def app(environ, fake_rocketchat):
    application = create_app(environ, client=fake_rocketchat)
    yield application
    shutdown(application, drain_seconds=0)


@pytest.fixture
def client(app):
    return app.test_client()


def load_json(path: pathlib.Path):
    return json.loads(path.read_text(encoding="utf-8-sig"))
