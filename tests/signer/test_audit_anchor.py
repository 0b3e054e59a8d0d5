"""The signer anchors the audit head: a chain cut short and re-headed is caught.

Whoever holds the audit key (root on the API host: the key comes from the KEK) can delete the
last events and write a head that matches what is left; the chain alone then looks intact.
The signer's anchor, taken by the background pass, is outside their reach.
"""

from __future__ import annotations

from sqlalchemy import delete

from tests.helpers import run_cli
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.database import audit_head_tag
from walletsvc.db.models import AuditEvent
from walletsvc.governance.audit import verify
from walletsvc.governance.tokens import create_token


def anchor_of(runtime: Runtime) -> tuple[int, str]:
    anchored = runtime.signer.status()["audit_anchor"]
    return int(anchored["seq"]), str(anchored["hash"])


def test_a_truncated_and_reheaded_log_fails_against_the_signers_anchor(runtime: Runtime) -> None:
    for i in range(3):
        create_token(runtime.db, runtime.tags, name=f"t{i}", scopes=["read"], actor="test")
    runtime.tick()  # the pass anchors the head in the signer
    seq, _ = anchor_of(runtime)

    with runtime.db.write() as uow:  # the attacker: the database and the audit key
        uow.session.execute(delete(AuditEvent).where(AuditEvent.seq > seq - 2))
        last = uow.audit_events.from_seq(seq - 2, limit=1)[0]
        head = uow.audit_events.head()
        assert head is not None
        head.last_seq, head.last_hash = last.seq, last.hash
        head.mac = audit_head_tag(runtime.db.audit_key, last.seq, last.hash)

    with runtime.db.read() as uow:
        alone = verify(uow, runtime.tags, runtime.db.audit_key)
        anchored = verify(uow, runtime.tags, runtime.db.audit_key, anchor=anchor_of(runtime))
    assert alone.ok  # the chain by itself cannot tell
    assert not anchored.ok
    assert f"audit event {seq}, which the signer anchored, is gone" in anchored.problems[0]

    result = run_cli(runtime.settings, "audit", "verify")
    assert result.returncode == 2
    assert "which the signer anchored, is gone" in result.stdout


def test_an_intact_log_passes_against_the_anchor(runtime: Runtime) -> None:
    create_token(runtime.db, runtime.tags, name="t", scopes=["read"], actor="test")
    runtime.tick()
    create_token(runtime.db, runtime.tags, name="later", scopes=["read"], actor="test")
    with runtime.db.read() as uow:
        report = verify(uow, runtime.tags, runtime.db.audit_key, anchor=anchor_of(runtime))
    assert report.ok, report.problems
