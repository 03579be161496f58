"""What an SMS body costs, counted as Twilio counts it, and how to cut one to a number of segments (pure).

Facts (twilio-facts.md; Twilio's own calculator, TwilioDevEd/message-segment-calculator): a body that is all GSM-7
(3GPP TS 23.038) is sent in 7-bit septets, 160 in one segment, 153 per segment once concatenated (a 6-byte header
takes the rest); a character of GSM-7's extension table is an escape septet plus one, 2 in all. Any other character
makes the whole body UCS-2: 70 UTF-16 code units in one segment, 67 per segment concatenated. Concatenation never
splits a character across segments: not an extension character's escape pair, not a surrogate pair (an emoji
outside the BMP is 2 units), so a segment can end a unit short.

Twilio's Smart Encoding (which swaps curly quotes and the like for GSM-7 look-alikes) is a Messaging Service option;
it is not assumed here, so such a body is counted as UCS-2, never cheaper than it is. Twilio's calculator also keeps
a multi-code-point emoji (a flag, a family joined by ZWJ) whole in one segment; here only surrogate pairs are kept
whole, so such an emoji straddling a boundary may cost one segment more than counted (the relay's own templates
use single-code-point emoji).
"""

from __future__ import annotations

import unicodedata

from ...safetext import utf16_units

# Twilio's limit on Body (error 21617 beyond). Twilio says "characters"; counted here in UTF-16 code units, which is
# never fewer than code points, so a body within it is within Twilio's limit whichever way Twilio counts.
MAX_BODY_CHARS = 1600

GSM7 = "GSM-7"
UCS2 = "UCS-2"

# GSM-7's basic table (3GPP TS 23.038 6.2.1) without 0x1B, the escape to the extension table, which is no character.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table's characters that phones show (form feed included, as Twilio's calculator has it).
GSM7_EXTENSION = frozenset("\f^{}\\[]~|€")

GSM7_SINGLE_SEPTETS, GSM7_CONCATENATED_SEPTETS = 160, 153
UCS2_SINGLE_UNITS, UCS2_CONCATENATED_UNITS = 70, 67

# The cut's marker: "…" is not GSM-7 and would turn a GSM-7 body into UCS-2 (160 → 70 per segment).
GSM7_ELLIPSIS = "..."
UCS2_ELLIPSIS = "…"
# A cut moves back to a line break this close to where it would fall, else to a space this close: a whole line or
# word reads better than a torn one, and losing a little more text costs nothing.
LINE_BOUNDARY_WINDOW_CHARS = 40
WORD_BOUNDARY_WINDOW_CHARS = 15

_ZERO_WIDTH_JOINER = "\u200d"


def _is_high_surrogate(char: str) -> bool:
    return "\ud800" <= char <= "\udbff"


def _is_low_surrogate(char: str) -> bool:
    return "\udc00" <= char <= "\udfff"


def _items(text: str) -> list[str]:
    """The text's unsplittable pieces: code points, with a surrogate pair that a str may hold as two kept as one."""
    items, index = [], 0
    while index < len(text):
        if (_is_high_surrogate(text[index]) and index + 1 < len(text)
                and _is_low_surrogate(text[index + 1])):
            items.append(text[index:index + 2])
            index += 2
        else:
            items.append(text[index])
            index += 1
    return items


def body_length(text: str) -> int:
    """The body's length as measured against MAX_BODY_CHARS: UTF-16 code units."""
    return utf16_units(text)


def is_gsm7(text: str) -> bool:
    """True when every character is in GSM-7's basic or extension table (the empty text too)."""
    return all(char in GSM7_BASIC or char in GSM7_EXTENSION for char in text)


def encoding(text: str) -> str:
    """ "GSM-7" or "UCS-2": the encoding Twilio sends this body in."""
    return GSM7 if is_gsm7(text) else UCS2


def _costs(text: str) -> list[int]:
    """Each unsplittable piece's size in the body's encoding: septets for GSM-7, code units for UCS-2."""
    if is_gsm7(text):
        return [2 if char in GSM7_EXTENSION else 1 for char in text]
    return [utf16_units(item) for item in _items(text)]


def segment_count(text: str) -> int:
    """How many segments Twilio sends (and bills) this body as; 1 for the empty body."""
    costs = _costs(text)
    single, concatenated = (
        (GSM7_SINGLE_SEPTETS, GSM7_CONCATENATED_SEPTETS) if is_gsm7(text)
        else (UCS2_SINGLE_UNITS, UCS2_CONCATENATED_UNITS)
    )
    if sum(costs) <= single:
        return 1
    segments, used = 1, 0
    for cost in costs:
        if used + cost > concatenated:  # the piece goes whole into the next segment
            segments, used = segments + 1, 0
        used += cost
    return segments


def _fits(body: str, max_segments: int) -> bool:
    return body_length(body) <= MAX_BODY_CHARS and segment_count(body) <= max_segments


def _longest_fitting_cut(text: str, cuts: list[int], marker: str, max_segments: int) -> int:
    """The largest of cuts (which start at 0) whose prefix with the marker fits; the marker alone always does. A
    longer prefix never costs fewer segments and the marker fixes the encoding, so the cuts that fit are a run from
    the start: a bisection finds its end."""
    low, high, best = 0, len(cuts) - 1, 0
    while low <= high:
        middle = (low + high) // 2
        if _fits(text[:cuts[middle]] + marker, max_segments):
            best, low = cuts[middle], middle + 1
        else:
            high = middle - 1
    return best


def _keeps_glyph_whole(text: str, cut: int) -> int:
    """The cut moved back off a combining mark, a variation selector, an emoji modifier or a joiner, which would
    otherwise dangle from (or lose) the character they belong to."""
    while 0 < cut < len(text):
        following, previous = text[cut], text[cut - 1]
        if not (unicodedata.combining(following) or "\ufe00" <= following <= "\ufe0f"
                or "\U0001f3fb" <= following <= "\U0001f3ff" or following == _ZERO_WIDTH_JOINER
                or previous == _ZERO_WIDTH_JOINER):
            break
        cut -= 1
        if cut > 0 and _is_low_surrogate(text[cut]) and _is_high_surrogate(text[cut - 1]):
            cut -= 1
    return cut


def _nice_cut(text: str, cut: int) -> int:
    """The cut moved back to a line break or a space when one is near, else kept where it is."""
    if cut < len(text) and text[cut] in "\r\n":
        return cut
    line = text.rfind("\n", 0, cut)
    if line > 0 and cut - line <= min(LINE_BOUNDARY_WINDOW_CHARS, cut // 2):
        return line
    if cut < len(text) and text[cut].isspace():
        return cut
    space = max(text.rfind(" ", 0, cut), text.rfind("\t", 0, cut))
    if space > 0 and cut - space <= min(WORD_BOUNDARY_WINDOW_CHARS, cut // 2):
        return space
    return _keeps_glyph_whole(text, cut)


def fit_to_segments(text: str, max_segments: int) -> str:
    """The text unchanged when it fits max_segments and MAX_BODY_CHARS, else cut at its end (at a line or word
    boundary when one is near) and marked with an ellipsis, so that segment_count(result) <= max_segments."""
    if max_segments < 1:
        raise ValueError("max_segments must be at least 1")
    if _fits(text, max_segments):
        return text
    # No prefix longer than MAX_BODY_CHARS code points can fit: bound the search (an alert's text may be long).
    cuts, position = [0], 0
    for item in _items(text[:MAX_BODY_CHARS + 1]):
        position += len(item)
        cuts.append(position)
    # Two ways to cut: keep a GSM-7 prefix marked "..." (153 per segment), or any prefix marked "…" (UCS-2, 67 per
    # segment). The first wins whenever it keeps as much: a body whose only emoji falls beyond the cut stays cheap.
    first_non_gsm7 = next((index for index, char in enumerate(text) if not is_gsm7(char)), len(text))
    gsm7_cut = _longest_fitting_cut(
        text, [cut for cut in cuts if cut <= first_non_gsm7], GSM7_ELLIPSIS, max_segments
    )
    ucs2_cut = _longest_fitting_cut(text, cuts, UCS2_ELLIPSIS, max_segments)
    cut, marker = (gsm7_cut, GSM7_ELLIPSIS) if gsm7_cut >= ucs2_cut else (ucs2_cut, UCS2_ELLIPSIS)
    prefix = text[:_nice_cut(text, cut)].rstrip()
    if not prefix:  # no boundary left anything: the hard cut
        prefix = text[:cut]
    # Every step above only shortened a prefix that fits, and the marker fixed its encoding.
    return prefix + marker
