"""Tests of the mock Rocket.Chat's page (GET /): each hook's messages drawn as Rocket.Chat draws them, escaped."""

import base64
import hashlib
import re
import sys
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mock_server  # noqa: E402
from mock_server import MockRocketChat  # noqa: E402

XSS_TITLE = "<img src=x onerror=window.pwned=1>"


@pytest.fixture
def mock():
    with MockRocketChat(port=0) as server:
        yield server


@pytest.fixture
def session():
    with requests.Session() as http:
        http.trust_env = False
        yield http


def post(session, mock, hook, message):
    response = session.post(mock.hook_url(hook), json=message, timeout=5)
    assert response.json() == {"success": True}, response.text
    return response


def page(session, mock) -> requests.Response:
    response = session.get(f"{mock.base_url}/", timeout=5)
    assert response.status_code == 200
    return response


def firing_attachment(**overrides):
    attachment = {
        "color": "#d9534f", "title": "FIRING: HighCPU on web-1", "author_name": "alertmanager",
        "author_link": "https://am.example/", "title_link": "https://prom.example/graph?g0.expr=cpu&g0.tab=1",
        "text": "*CPU above 95%*\nfor 5 minutes", "image_url": "https://img.example/graph.png",
        "fields": [{"short": True, "title": "Severity", "value": "critical"},
                   {"short": True, "title": "Instance", "value": "web-1:9100"},
                   {"short": False, "title": "Links", "value": "[Runbook](https://runbooks.example/cpu)"}],
    }
    attachment.update(overrides)
    return attachment


def style_sheet(html_text: str) -> str:
    (css,) = re.findall(r"<style>(.*?)</style>", html_text, re.DOTALL)
    return css


def bar_class(html_text: str, color: str) -> str:
    """The class the page's style sheet gives a colour bar of this colour."""
    match = re.search(r"\.(bar-\d+) \{ border-left-color: " + re.escape(color) + r"; \}", style_sheet(html_text))
    assert match, f"no colour bar rule for {color}"
    return match[1]


def test_page_lists_every_hook_with_its_messages_newest_first(mock, session):
    post(session, mock, "critical", {"text": "first critical"})
    post(session, mock, "critical", {"text": "second critical"})
    post(session, mock, "warning", {"text": "one warning"})
    response = page(session, mock)
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    body = response.text
    sections = re.findall(r'<section class="channel" id="channel-(\w+)"><h2>#\w+ <small>([^<]*)</small>', body)
    assert sections == [("critical", "2 messages"), ("warning", "1 message"), ("info", "0 messages")]
    assert body.index("second critical") < body.index("first critical") < body.index("one warning")
    assert body.count("No messages yet.") == 1  # info
    assert '<meta http-equiv="refresh" content="5">' in body


def test_attachment_is_drawn_with_colour_bar_title_link_author_text_and_fields(mock, session):
    post(session, mock, "critical", {"text": "[FIRING:1] HighCPU", "alias": "Alertmanager",
                                     "attachments": [firing_attachment()]})
    body = page(session, mock).text
    assert f'<div class="attachment {bar_class(body, "#d9534f")}">' in body
    assert ('<div class="title"><a href="https://prom.example/graph?g0.expr=cpu&amp;g0.tab=1" target="_blank" '
            'rel="noopener noreferrer">FIRING: HighCPU on web-1</a></div>') in body
    assert '<a href="https://am.example/" target="_blank" rel="noopener noreferrer">alertmanager</a>' in body
    assert '<div class="attachment-text"><strong>CPU above 95%</strong>\nfor 5 minutes</div>' in body
    fields = re.findall(r'<div class="field( short)?"><dt>([^<]*)</dt><dd class="field-value">(.*?)</dd></div>', body)
    assert fields == [(" short", "Severity", "critical"), (" short", "Instance", "web-1:9100"),
                      ("", "Links", '<a href="https://runbooks.example/cpu" target="_blank" '
                                    'rel="noopener noreferrer">Runbook</a>')]
    assert '<span class="alias">Alertmanager</span>' in body
    # The image is named, not loaded: nothing on the page fetches anything.
    assert "<img" not in body and "image (not loaded):" in body


def test_untrusted_contents_stay_text(mock, session):
    post(session, mock, "critical", {
        "text": "<script>window.pwned=1</script> & more",
        "alias": '"><script>alert(1)</script>',
        "emoji": "<b>:x:</b>",
        "attachments": [firing_attachment(
            title=XSS_TITLE, pretext="<iframe src=//evil>", author_name="<svg onload=alert(1)>",
            text="<a href=//evil>x</a>",
            fields=[{"short": True, "title": "<u>t</u>", "value": "<i onmouseover=alert(1)>v</i>"}])],
    })
    body = page(session, mock).text
    for raw in ("<script", "<img", "<iframe", "<svg", "<a href=//evil", "<u>", "<i ", "<b>"):
        assert raw not in body
    for shown in ("&lt;script&gt;window.pwned=1&lt;/script&gt; &amp; more", html_escaped(XSS_TITLE),
                  "&lt;iframe src=//evil&gt;", "&lt;svg onload=alert(1)&gt;", "&lt;a href=//evil&gt;x&lt;/a&gt;",
                  "&lt;u&gt;t&lt;/u&gt;", "&lt;i onmouseover=alert(1)&gt;v&lt;/i&gt;", "&lt;b&gt;:x:&lt;/b&gt;",
                  "&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"):
        assert shown in body


def html_escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def test_a_javascript_title_link_is_refused_and_never_drawn(mock, session):
    response = session.post(mock.hook_url("critical"), json={"attachments": [
        firing_attachment(title_link="javascript:window.pwned=1")]}, timeout=5)
    assert (response.status_code, response.json()["error"]) == (400, "Invalid href value provided")
    assert "javascript:" not in page(session, mock).text


def test_only_http_links_become_links(mock, session):
    post(session, mock, "critical", {
        "text": "see [me](javascript:window.pwned=1) and [ok](https://ok.example/)",
        "attachments": [firing_attachment(  # data: passes Rocket.Chat's check; drawn as text all the same
            title="data title", title_link="data:text/html,<script>alert(1)</script>",
            author_link="data:text/plain,x", image_url="data:image/png;base64,AAAA",
            fields=[{"short": True, "title": "Links", "value": "[run](javascript:alert(1))"}])],
    })
    body = page(session, mock).text
    hrefs = re.findall(r'href="([^"]*)"', body)
    assert hrefs == ["https://ok.example/"]
    assert "see [me](javascript:window.pwned=1) and" in body
    assert '<div class="title">data title</div>' in body
    assert "[run](javascript:alert(1))" in body


def test_a_javascript_link_that_got_past_the_server_is_still_text():
    # Defence in depth, below the mock's own validation: the drawing alone refuses anything but http(s).
    html_text = mock_server.render_attachment({"title": "t", "title_link": "javascript:alert(1)",
                                               "author_name": "a", "author_link": " JavaScript:alert(1)"}, {})
    assert "href" not in html_text and '<div class="title">t</div>' in html_text


def test_colours_cannot_break_out_of_the_style_sheet(mock, session):
    post(session, mock, "critical", {"attachments": [
        firing_attachment(color="red; } body { display: none"),
        firing_attachment(color="</style><script>alert(1)</script>"),
        firing_attachment(color="danger"),  # a Rocket.Chat theme token
        firing_attachment(color="good"),  # Slack's: not a colour; the browser ignores it, as Rocket.Chat's does
        firing_attachment(color="rgb(1, 2, 3)"),
    ]})
    body = page(session, mock).text
    css = style_sheet(body)
    assert "display: none" not in css and "script" not in css and body.count("</style>") == 1
    assert bar_class(body, mock_server.THEME_COLORS["danger"]) and bar_class(body, "good")
    assert bar_class(body, "rgb(1, 2, 3)")
    assert body.count('<div class="attachment">') == 2  # the two unsafe colours: the default bar


def test_markdown_is_drawn_minimally():
    assert mock_server.render_markdown("*b* `<c>` _i_ ~s~ snake_case_name 2*3*4 [l](http://x.example/?a=1&b=2)") == (
        '<strong>b</strong> <code>&lt;c&gt;</code> <em>i</em> <del>s</del> snake_case_name 2*3*4 '
        '<a href="http://x.example/?a=1&amp;b=2" target="_blank" rel="noopener noreferrer">l</a>')
    assert mock_server.render_markdown("*[bold link](https://x.example/)*") == (
        '<strong><a href="https://x.example/" target="_blank" rel="noopener noreferrer">bold link</a></strong>')


def test_content_security_policy_allows_only_the_page_style(mock, session):
    post(session, mock, "critical", {"attachments": [firing_attachment()]})
    response = page(session, mock)
    digest = base64.b64encode(hashlib.sha256(style_sheet(response.text).encode()).digest()).decode()
    directives = response.headers["Content-Security-Policy"].split(";")
    policy = dict(directive.strip().split(" ", 1) for directive in directives)
    assert policy == {"default-src": "'none'", "style-src": f"'sha256-{digest}'", "img-src": "'none'",
                      "base-uri": "'none'", "form-action": "'none'", "frame-ancestors": "'none'"}
    assert "<script" not in response.text and " style=" not in response.text


def test_page_shows_no_hook_token(mock, session):
    post(session, mock, "critical", {"text": "hello"})
    body = page(session, mock).text
    assert all(f"{name}-token" not in body for name in mock.hook_names)


def test_collapsed_attachment_and_quote(mock, session):
    post(session, mock, "info", {"attachments": [
        firing_attachment(collapsed=True),
        {"message_link": "https://chat.example/x", "text": "quoted *text*", "color": "#123456",
         "fields": [{"title": "quote-field-title", "value": "field"}]},
    ]})
    body = page(session, mock).text
    assert "<details><summary>collapsed</summary><div class=\"attachment-text\">" in body
    assert '<blockquote class="attachment quote">quoted <strong>text</strong></blockquote>' in body
    assert "quote-field-title" not in body and "#123456" not in body


def test_other_requests_to_the_root_still_answer_404(mock, session):
    for method in ("POST", "DELETE", "PUT"):
        response = session.request(method, f"{mock.base_url}/", timeout=5)
        assert response.status_code == 404
        assert response.json() == {"success": False, "error": f"no route {method} /"}
