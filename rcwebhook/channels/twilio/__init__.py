"""The SMS channel's Twilio side: the only code that knows Twilio's contract (its Messages API, its error codes,
its segment counting and its webhook signatures)."""

from .client import (
    SmsOutcome,
    SmsResult,
    TwilioClient,
    TwilioCredentials,
    mask_numbers,
    masked_number,
)
from .segments import MAX_BODY_CHARS, body_length, encoding, fit_to_segments, is_gsm7, segment_count
from .signature import signature_matches, twilio_signature

__all__ = [
    "MAX_BODY_CHARS",
    "SmsOutcome",
    "SmsResult",
    "TwilioClient",
    "TwilioCredentials",
    "body_length",
    "encoding",
    "fit_to_segments",
    "is_gsm7",
    "mask_numbers",
    "masked_number",
    "segment_count",
    "signature_matches",
    "twilio_signature",
]
