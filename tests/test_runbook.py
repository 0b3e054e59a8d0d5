"""docs/runbook.md's key-compromise response, run as written.

Every `walletsvc …` line of the section's fenced `sh` blocks runs in a subprocess against a
test data directory and database, with no API process. Placeholders are filled the way the
runbook tells a human to fill them: `<freeze-id>` and `<approval-request-id>` from what the
previous commands printed, `<approver>` and `<code>` once per approver of the quorum (the
password goes to stdin, as an approver would type it). Between "sweep" and "verify" the test
mines a block on the embedded chain: the confirmation an operator waits for.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.conftest import WALLET, fund_wallet
from tests.governance_helpers import PASSWORD, Team
from tests.helpers import external_destination, run_cli
from tests.treasury.test_sweeps import with_cold
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models import ChainTransaction, Utxo
from walletsvc.db.models_risk import KeyRotation
from walletsvc.wallets.freezes import active_freezes
from walletsvc.wallets.service import current_address, get_wallet

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Incident: hot key compromise"
APPROVERS = ("alice", "bob")


def runbook_commands() -> list[list[str]]:
    """The `sh` blocks of the key-compromise section, each a list of command lines."""
    text = (REPO / "docs" / "runbook.md").read_text()
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    return [[line for line in b.splitlines() if line.strip()] for b in blocks]


class Operator:
    """Runs runbook lines like a person at the terminal, filling the placeholders."""

    def __init__(self, runtime: Runtime, team: Team) -> None:
        self.runtime, self.team = runtime, team
        self.freeze_id = ""
        self.request_id = ""
        self.ran: list[str] = []

    def run_block(self, lines: list[str]) -> None:
        for line in lines:
            assert line.startswith("walletsvc "), f"not a walletsvc command: {line}"
            if "<approver>" in line:
                for name in APPROVERS:
                    self.run(line, approver=name)
            else:
                self.run(line)

    def run(self, line: str, approver: str | None = None) -> str:
        stdin = None
        filled = line.replace("<freeze-id>", self.freeze_id)
        filled = filled.replace("<approval-request-id>", self.request_id)
        if approver is not None:
            member = self.team.members[approver]
            filled = filled.replace("<approver>", approver).replace("<code>", member.live_code())
            stdin = PASSWORD + "\n"
        assert "<" not in filled, f"unfilled placeholder in {filled}"
        args = shlex.split(filled)
        result = run_cli(self.runtime.settings, *args[1:], stdin=stdin)
        assert result.returncode == 0, f"{filled}\n{result.stdout}\n{result.stderr}"
        self._remember(result.stdout)
        self.ran.append(filled)
        return result.stdout

    def _remember(self, out: str) -> None:
        if match := re.search(r"FROZEN .*: freeze (\S+)", out):
            self.freeze_id = match.group(1)
        if match := re.search(r"approval request: (\S+)", out):
            self.request_id = match.group(1)


def test_key_compromise_runbook_runs_as_written(runtime: Runtime) -> None:
    runtime.settings.auto_sweep = False
    with_cold(runtime)
    fund_wallet(runtime)
    team = Team(runtime)
    for name in APPROVERS:
        team.add(name)
    with runtime.db.read() as uow:
        s = uow.session
        old_address = current_address(uow, get_wallet(uow, WALLET)).address
    runtime.chain.close()  # the CLI opens the embedded chain itself: one holder at a time

    blocks = runbook_commands()
    assert len(blocks) == 7, "freeze, inspect, rotate, approve, sweep, verify, unfreeze"
    operator = Operator(runtime, team)
    for n, block in enumerate(blocks):
        if n == 5:  # verify: after the sweep's confirmation
            operator.run(f"walletsvc devchain mine 1 --to {external_destination('pool')[0]}")
        operator.run_block(block)

    assert any(line.startswith("walletsvc approve") for line in operator.ran)
    with runtime.db.read() as uow:
        s = uow.session
        assert active_freezes(uow) == []
        wallet = get_wallet(uow, WALLET)
        assert wallet.current_epoch == 2
        assert current_address(uow, wallet).address != old_address
        rotation = s.scalar(select(KeyRotation))
        assert rotation is not None and rotation.status == "rotated"
        swept = s.scalars(
            select(Utxo).where(Utxo.block_height <= 11, Utxo.spent_height.is_not(None))
        ).all()
        # The ten coinbases mature at the rotation (and one more that matured during the
        # drill's confirmation) all went to cold in the rotation's sweeps.
        assert len(swept) >= 10
        sweeps = {tx.txid: tx for tx in s.scalars(select(ChainTransaction))}
        assert all(sweeps[u.spent_by_txid or ""].kind == "sweep" for u in swept)
