"""POST /twilio/status: Twilio's status callbacks for the SMS the relay sent, checked by X-Twilio-Signature.

Twilio signs each callback with the account's auth token over the URL it called (the StatusCallback we gave:
PUBLIC_URL/twilio/status) and the POST parameters (twilio-facts.md). A callback whose signature does not match is
answered 403 and recorded nowhere: anyone can reach this endpoint, which is open like /webhook would be.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Callable

from flask import Blueprint, Response, request

from ..channels.twilio.signature import signature_matches
from ..relay import Answer, error_answer
from ..sms.escalation import Escalation
from ..store import StoreError

logger = logging.getLogger("rcwebhook.sms")

MESSAGE_SID = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}$")
STATUS_WORD = re.compile(r"^[a-z_]{1,20}$")
MAX_CALLBACK_BYTES = 64 * 1024  # a callback is a few hundred bytes of form fields
FORGED_LOG_EVERY_SECONDS = 60.0  # one WARNING a minute for refused callbacks; the metric counts each


def twilio_status_blueprint(escalation: Escalation, auth_token: str, callback_url: str,
                            answer: Callable[[Answer], Response], on_forged: Callable[[], None]) -> Blueprint:
    blueprint = Blueprint("twilio_status", __name__)
    forged_logged_at = [-FORGED_LOG_EVERY_SECONDS]

    @blueprint.post("/twilio/status")
    def twilio_status() -> Response:
        if not callback_url:
            return answer(error_answer(404, "status callbacks are off: set PUBLIC_URL and TWILIO_AUTH_TOKEN"))
        if request.content_length is not None and request.content_length > MAX_CALLBACK_BYTES:
            return answer(error_answer(413, "a status callback is far smaller"))
        params = list(request.form.items(multi=True))
        if not signature_matches(auth_token, callback_url, params, request.headers.get("X-Twilio-Signature", "")):
            on_forged()
            now = time.monotonic()
            if now - forged_logged_at[0] < FORGED_LOG_EVERY_SECONDS:  # a spray must not flood the log
                return answer(error_answer(403, "X-Twilio-Signature does not match"))
            forged_logged_at[0] = now
            logger.warning("refused a Twilio status callback from %s: X-Twilio-Signature does not match (answered "
                           "403; if PUBLIC_URL differs from the address Twilio calls, every callback fails so). At most "
                           "one such line a minute; the metric counts each (status=\"forged\")", request.remote_addr)
            return answer(error_answer(403, "X-Twilio-Signature does not match"))
        sid = request.form.get("MessageSid", "") or request.form.get("SmsSid", "")
        status = (request.form.get("MessageStatus", "") or request.form.get("SmsStatus", "")).strip().lower()
        if not MESSAGE_SID.match(sid) or not STATUS_WORD.match(status):
            return answer(error_answer(400, "MessageSid and MessageStatus are needed"))
        code_text = request.form.get("ErrorCode", "").strip()
        error_code = int(code_text) if code_text.isascii() and code_text.isdigit() and len(code_text) < 10 else None
        try:
            escalation.record_status(sid, status, error_code)
        except StoreError as error:
            logger.error("a Twilio status callback for %s could not be recorded: %s", sid, error)
            return answer(error_answer(503, "the state store is unavailable; the status was not recorded"))
        return Response(status=204)

    return blueprint
