"""Fault injection: what goes wrong, how often, and for which request.

Every random choice is a pure function of ``(seed, run_id, attempt)``, where ``attempt`` counts the
requests already made for that run id. Two emulators with the same seed that see the same requests
per run id inject the same faults, whatever order concurrent requests arrive in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["FAULT_NAMES", "Fault", "FaultConfig", "RetryAfterStyle"]

Fault = int | str
"""One fault: an HTTP status to answer with (200 means "no fault"), or one of ``FAULT_NAMES``."""

FAULT_NAMES = ("ok", "reset", "truncate", "html", "slow")
"""The named faults.

- ``ok``: no fault, the normal answer (same as ``200``).
- ``reset``: the headers and half the body are sent, then the connection is dropped.
- ``truncate``: a complete response whose JSON body is cut in half (Content-Length matches).
- ``html``: an HTML page (status ``html_status``, 200 by default) instead of JSON, as a proxy sends.
- ``slow``: the normal answer, its body trickled in ``slow_chunks`` parts ``slow_chunk_delay_ms`` apart.
"""

RetryAfterStyle = Literal["seconds", "ms", "http-date", "none"]
"""How a 429 says when to retry: ``Retry-After: <seconds>``, ``retry-after-ms``, an HTTP-date, or not at all.
"""


def unit_draw(seed: int, key: str, attempt: int, purpose: str) -> float:
    """A uniform number in [0, 1) fixed by its arguments (stable across processes and runs)."""
    digest = hashlib.blake2b(f"{seed}\x1f{key}\x1f{attempt}\x1f{purpose}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _check_fault(fault: Fault) -> Fault:
    """Refuse a fault the emulator could not play, at configuration time rather than mid-test."""
    if isinstance(fault, bool) or not isinstance(fault, (int, str)):
        raise TypeError(f"a fault is an HTTP status or one of {FAULT_NAMES}, not {fault!r}")
    if isinstance(fault, int):
        if not 200 <= fault <= 599:
            raise ValueError(f"fault status must be within 200..599, got {fault}")
        return fault
    if fault.isdigit():
        return _check_fault(int(fault))
    if fault not in FAULT_NAMES:
        raise ValueError(f"unknown fault {fault!r}; expected an HTTP status or one of {FAULT_NAMES}")
    return fault


@dataclass(frozen=True)
class FaultConfig:
    """What goes wrong, for the whole emulator or for one run id.

    Precedence for a request: ``status`` (always), else the next ``script`` entry, else a draw
    against ``rates``. Latency applies to every request. A per-run config replaces the emulator's
    one for that run; it is not merged with it.

    Attributes:
        latency_ms: Fixed delay before the response starts.
        jitter_ms: Extra delay, uniform in [0, jitter_ms), drawn per request.
        rates: Probability of each fault per request, e.g. ``{503: 0.1, "reset": 0.02}``. Sum <= 1.
        script: Faults played in order, one per request to the run; after the end, ``rates`` apply.
        status: A status this run (or every run) always answers with, e.g. 401, 404 or 422.
        retry_after: How a 429 carries its delay.
        retry_after_s: The delay a 429 asks for, in seconds.
        slow_chunks: How many parts a slow body is sent in.
        slow_chunk_delay_ms: The pause between two parts of a slow body.
        html_status: The status of the ``html`` fault's response.

    Example:
        >>> FaultConfig(script=(503, 503, 200)).script
        (503, 503, 200)
    """

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    rates: Mapping[Fault, float] = field(default_factory=dict)
    script: Sequence[Fault] = ()
    status: int | None = None
    retry_after: RetryAfterStyle = "seconds"
    retry_after_s: float = 1.0
    slow_chunks: int = 4
    slow_chunk_delay_ms: float = 100.0
    html_status: int = 200
    _cumulative: tuple[tuple[float, Fault], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.latency_ms < 0 or self.jitter_ms < 0 or self.slow_chunk_delay_ms < 0 or self.retry_after_s < 0:
            raise ValueError("latency, jitter, slow chunk delay and retry_after_s must not be negative")
        if self.slow_chunks < 1:
            raise ValueError("slow_chunks must be at least 1")
        if self.retry_after not in ("seconds", "ms", "http-date", "none"):
            raise ValueError(f"unknown retry_after style {self.retry_after!r}")
        if self.status is not None:
            _check_fault(self.status)
        _check_fault(self.html_status)
        object.__setattr__(self, "script", tuple(_check_fault(f) for f in self.script))
        rates = {_check_fault(fault): float(rate) for fault, rate in self.rates.items()}
        if any(not 0.0 <= rate <= 1.0 for rate in rates.values()) or sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError("each rate must be within [0, 1] and the rates must sum to at most 1")
        object.__setattr__(self, "rates", rates)
        total = 0.0
        cumulative = []
        for fault in sorted(rates, key=str):  # a fixed order, so the same draw picks the same fault
            total += rates[fault]
            cumulative.append((total, fault))
        object.__setattr__(self, "_cumulative", tuple(cumulative))

    def choose(self, seed: int, run_id: str, attempt: int) -> Fault | None:
        """The fault for the ``attempt``-th request (from 0) to ``run_id``, or None for none."""
        if self.status is not None:
            return self.status
        if attempt < len(self.script):
            return self.script[attempt]
        if self._cumulative:
            draw = unit_draw(seed, run_id, attempt, "fault")
            for bound, fault in self._cumulative:
                if draw < bound:
                    return fault
        return None

    def delay_s(self, seed: int, key: str, attempt: int) -> float:
        """The latency, in seconds, for the ``attempt``-th request about ``key``."""
        jitter = self.jitter_ms * unit_draw(seed, key, attempt, "jitter") if self.jitter_ms else 0.0
        return (self.latency_ms + jitter) / 1000.0
