"""The signer as a child process of `walletsvc serve`/`init`/`dev bootstrap` on the embedded
regtest default, so `make run` stays one command (production runs `walletsvc signer` itself,
as its own OS user or on its own host: docs/runbook.md)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from walletsvc.config import Settings
from walletsvc.domain.errors import DependencyUnavailable, DomainError
from walletsvc.domain.network import Network
from walletsvc.signer.client import SignerClient

START_TIMEOUT_S = 60.0


def _answers(s: Settings) -> bool:
    client = SignerClient(s)
    try:
        client.status()
        return True
    except DomainError:
        return False
    finally:
        client.close()


@contextmanager
def running_dev_signer(s: Settings) -> Iterator[None]:
    embedded = s.network is Network.REGTEST and s.chain_backend == "embedded"
    if not embedded or s.signer_tcp_host or _answers(s):
        yield
        return
    # preexec_fn is safe here: the CLI starts the signer before it starts any thread.
    child = subprocess.Popen(
        [sys.executable, "-m", "walletsvc.cli.main", "signer"],
        preexec_fn=_die_with_parent,  # noqa: PLW1509
    )
    try:
        _wait_until_up(s, child)
        yield
    finally:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _die_with_parent() -> None:
    """Linux: the dev signer gets SIGTERM when its parent dies, however it dies (Ctrl-C,
    kill -9), so `make run` leaves no signer behind. Elsewhere: nothing."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _wait_until_up(s: Settings, child: subprocess.Popen[bytes]) -> None:
    """Poll until the socket answers: a process start-up, not a test synchronisation."""
    import time

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise DependencyUnavailable(f"the signer exited at start (status {child.returncode})")
        if _answers(s):
            return
        time.sleep(0.1)
    raise DependencyUnavailable("the signer did not start within a minute")
