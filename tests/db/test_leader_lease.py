"""The worker's leader lease: one holder at a time among the processes sharing a database,
kept while its holder renews it, and free again once the holder lets go (the kill -9
takeover across processes: tests/bootstrap/test_leader_failover.py)."""

from __future__ import annotations

from tests.helpers import audit_events
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.database import Database
from walletsvc.db.leader import LeaderLease


def test_one_holder_at_a_time_and_the_next_takes_over_on_release(runtime: Runtime) -> None:
    other_process = Database(runtime.db.url, audit_key=runtime.db.audit_key)
    first = LeaderLease(runtime.db, holder="host-a:1")
    second = LeaderLease(other_process, holder="host-b:2")
    try:
        assert first.acquire()
        assert not second.acquire()
        assert first.acquire()  # renewing keeps it
        assert not second.acquire()
        first.release()
        assert second.acquire()
        assert not first.acquire()
    finally:
        first.release()
        second.release()
        other_process.dispose()


def test_runtime_passes_only_while_leading(runtime: Runtime) -> None:
    rival = LeaderLease(runtime.db, holder="another-host:9")
    try:
        assert rival.acquire()
        before = runtime.passes
        runtime.background_pass()  # not the leader: the pass does nothing
        assert runtime.passes == before + 1 and not runtime.leader.held
        assert audit_events(runtime.db, "worker.leader_taken") == []
        rival.release()
        runtime.background_pass()
        assert runtime.leader.held
        (taken,) = audit_events(runtime.db, "worker.leader_taken")
        assert taken.data["holder"] == runtime.leader.holder
    finally:
        rival.release()
