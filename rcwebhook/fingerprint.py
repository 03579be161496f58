"""Alert identities as Alertmanager computes them (pure)."""

from __future__ import annotations

import hashlib
from typing import Mapping

from .timefmt import normalised_timestamp

# prometheus/common model.LabelSet.Fingerprint(): FNV-1a 64 over the sorted label names and values, each followed
# by the separator byte 0xff; an empty set gives FNV's offset basis. Printed as 16 hex digits (%016x).
_FNV64_OFFSET = 14695981039346656037
_FNV64_PRIME = 1099511628211
_SEPARATOR = 0xFF
_MASK64 = (1 << 64) - 1


def labels_fingerprint(labels: Mapping[str, str]) -> str:
    value = _FNV64_OFFSET
    for name in sorted(labels):
        for chunk in (name.encode("utf-8", "surrogatepass"), bytes([_SEPARATOR]),
                      str(labels[name]).encode("utf-8", "surrogatepass"), bytes([_SEPARATOR])):
            for byte in chunk:
                value = ((value ^ byte) * _FNV64_PRIME) & _MASK64
    return f"{value:016x}"


def occurrence_id(fingerprint: str, starts_at: str) -> str:
    """The opaque id of an alert occurrence: the same alert (fingerprint) firing from the same startsAt."""
    return hashlib.blake2b(f"{fingerprint}\x00{starts_at}".encode("utf-8", "surrogatepass"),
                           digest_size=10).hexdigest()


def alert_occurrence(fingerprint: str, labels: Mapping[str, str], starts_at: str) -> tuple[str, str]:
    """(occurrence id, fingerprint) of an alert: the sender's fingerprint, else Alertmanager's from the labels, with
    startsAt in RFC 3339 UTC (so two spellings of one instant are one occurrence)."""
    fingerprint = fingerprint or labels_fingerprint(labels)
    return occurrence_id(fingerprint, normalised_timestamp(starts_at)), fingerprint
