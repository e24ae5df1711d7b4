"""The systemd unit passes `systemd-analyze verify` (which needs no running systemd: the machine's
PID 1 is not systemd) with no warning at all, since verify reports unknown keys and bad values as
warnings with exit status 0; and it keeps the hardening and restart settings users rely on."""

from __future__ import annotations

import configparser
import sys
from pathlib import Path

from tests.deploy.tools import DEPLOY, run, tool

UNIT = DEPLOY / "systemd" / "corral.service"


def verify(tmp_path: Path, text: str) -> tuple[int, str]:
    # The copy runs this checkout's `corral` (verify checks that ExecStart's binary exists and is
    # executable); nothing else changes.
    corral = Path(sys.executable).parent / "corral"
    assert "ExecStart=/opt/corral/bin/corral " in text
    path = tmp_path / "corral.service"
    path.write_text(text.replace("/opt/corral/bin/corral", str(corral)))
    result = run(tool("systemd-analyze", "Debian systemd"), "verify", "--man=no", str(path))
    return result.returncode, result.stdout + result.stderr


def test_systemd_analyze_verify_passes_without_a_warning(tmp_path: Path) -> None:
    code, output = verify(tmp_path, UNIT.read_text())
    assert code == 0 and output.strip() == "", output


def test_verify_reports_a_broken_copy(tmp_path: Path) -> None:
    broken = UNIT.read_text().replace("ProtectSystem=strict", "ProtectSystem=strikt").replace("Restart=", "Restrat=")
    code, output = verify(tmp_path, broken)
    assert "strikt" in output and "Restrat" in output
    code, output = verify(tmp_path, UNIT.read_text().replace("Type=exec", "Type=exec\nExecStartPre=/no/such/binary"))
    assert code != 0 and "/no/such/binary" in output


def test_the_unit_is_hardened_and_restarts() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text())
    service = unit["Service"]
    assert service["ExecStart"].startswith("/opt/corral/bin/corral serve --config ")
    assert service["ExecStart"].endswith(" --workers ${CORRAL_WORKERS}")
    assert "CORRAL_WORKERS=1" in service["Environment"].split()  # a default that needs no Redis
    assert service["KillMode"] == "mixed", "SIGTERM to the parent, which drains its workers"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    expected = {
        "DynamicUser": "yes",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "Restart": "on-failure",
        "StateDirectory": "corral",
        "WorkingDirectory": "/var/lib/corral",
        "CapabilityBoundingSet": "",
    }
    assert {k: service.get(k) for k in expected} == expected
    assert int(service["LimitNOFILE"]) >= 65536
    assert int(service["TimeoutStopSec"]) > 30, "longer than server.shutdown_grace_s"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
