"""Go-style durations (`90s`, `5m`, `1h30m`, `500ms`), the form Kubernetes users write."""

from __future__ import annotations

import re

_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = r"([0-9]+(?:[.][0-9]+)?)(ns|us|µs|ms|s|m|h)"
# Shared with the CRD's CEL rule (hence `[.]`: a backslash is no escape in a CEL string), so kubectl apply rejects exactly what this parser rejects.
DURATION_PATTERN = rf"^({_PART})+$"
_DURATION_RE = re.compile(DURATION_PATTERN)
_PART_RE = re.compile(_PART)


def parse_duration(text: str) -> float:
    """Return the duration in seconds; raise ValueError with a readable message otherwise."""
    value = text.strip()
    if not _DURATION_RE.match(value):
        raise ValueError(f"{text!r} is not a duration: write a number and a unit, e.g. 30s, 5m, 1h30m")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART_RE.findall(value))


def format_duration(seconds: float) -> str:
    """The shortest Go-style spelling of whole seconds (`1h30m`, `45s`)."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "".join(parts) or "0s"
