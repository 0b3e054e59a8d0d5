"""The crash test's worker process: the real runtime and worker, with a fault injected here.

Run as ``python -m tests.payouts.crash_worker [--crash-after-sign]``. With the flag, the
worker's broadcast step is patched so the process dies (exit 86) right after a pass has
committed a signed transaction and before anything is broadcast: a power cut at the worst
moment. The product has no fault-injection switch; the fault lives only in this test hook.
"""

from __future__ import annotations

import os
import sys

from walletsvc.bootstrap.runtime import Runtime
from walletsvc.config import Settings
from walletsvc.devchain.service import open_dev_chain
from walletsvc.payouts.worker import PayoutWorker, WorkerReport

CRASH_EXIT = 86
CRASH_AFTER_SIGN = "--crash-after-sign"


def crash_after_sign() -> None:
    """Make ``run_once`` die between committing its signed transaction and broadcasting it."""
    broadcast = PayoutWorker.broadcast_signed

    def broadcast_or_die(self: PayoutWorker, report: WorkerReport | None = None) -> list[str]:
        if report is not None and report.signed_txids:
            os._exit(CRASH_EXIT)
        return broadcast(self, report)

    PayoutWorker.broadcast_signed = broadcast_or_die  # type: ignore[method-assign]


def main(argv: list[str]) -> None:
    if CRASH_AFTER_SIGN in argv:
        crash_after_sign()
    settings = Settings()
    runtime = Runtime.open(settings, chain=open_dev_chain(settings))
    runtime.tick()
    print("the worker survived its pass")
    runtime.close()


if __name__ == "__main__":
    main(sys.argv[1:])
