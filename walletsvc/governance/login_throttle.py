"""Failed staff logins, counted per client address and per username, to slow guessing down.

Why not the account lock: a lock after N wrong passwords lets anyone who knows a username keep
that person out (an outsider could keep the approvers who would veto a payout or lift a freeze
locked out). So wrong passwords only slow the guesser down (429 with Retry-After), and the
same answer comes for known and unknown usernames; the account lock is kept for wrong TOTP
codes after a right password, which only someone holding the password can cause.

Counts live in this process's memory (one API process serves the staff console); a restart
forgets them, which costs the guesser nothing they did not have before.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

from walletsvc.domain.errors import RateLimited

_MAX_TRACKED_KEYS = 50_000  # bounds memory when a guesser sprays usernames or addresses


class LoginThrottled(RateLimited):
    """Too many failed logins from this address or for this username: try again later."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed logins; retry in {retry_after_s} seconds")
        self.retry_after_s = retry_after_s


@dataclass
class LoginThrottle:
    """Sliding-window counts of failed logins."""

    max_per_address: int = 20
    max_per_username: int = 5
    window_s: int = 300
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def ensure_address_allowed(self, client: str, now: datetime) -> None:
        """Refuse an address that failed too often, before any password work."""
        wait = self._wait(_address_key(client), self.max_per_address, now.timestamp())
        if wait:
            raise LoginThrottled(wait)

    def record_failure(self, client: str, username: str, now: datetime) -> LoginThrottled | None:
        """Count a failed login; the throttle error if the address or the username is now over
        its limit (the caller answers it instead of "invalid credentials")."""
        moment = now.timestamp()
        with self._lock:
            if len(self._failures) >= _MAX_TRACKED_KEYS:
                self._forget_stale(moment)
            for key in (_address_key(client), _username_key(username)):
                self._failures.setdefault(key, deque()).append(moment)
        wait = max(
            self._wait(_address_key(client), self.max_per_address, moment),
            self._wait(_username_key(username), self.max_per_username, moment),
        )
        return LoginThrottled(wait) if wait else None

    def _wait(self, key: str, limit: int, moment: float) -> int:
        """Seconds until ``key`` is under ``limit`` again (0: it is now)."""
        with self._lock:
            times = self._failures.get(key)
            if times is None:
                return 0
            while times and times[0] <= moment - self.window_s:
                times.popleft()
            if len(times) < limit:
                return 0
            # The oldest failure that keeps the count at the limit must leave the window.
            return max(1, math.ceil(times[-limit] + self.window_s - moment))

    def _forget_stale(self, moment: float) -> None:
        cutoff = moment - self.window_s
        for key in [k for k, t in self._failures.items() if not t or t[-1] <= cutoff]:
            del self._failures[key]
        if len(self._failures) >= _MAX_TRACKED_KEYS:  # all fresh: drop the oldest half
            oldest = sorted(self._failures, key=lambda k: self._failures[k][-1])
            for key in oldest[: len(oldest) // 2]:
                del self._failures[key]


def _address_key(client: str) -> str:
    return f"address:{client}"


def _username_key(username: str) -> str:
    return f"username:{username.casefold()}"
