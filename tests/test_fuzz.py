"""Property-based fuzzing of the API from its own OpenAPI document, with schemathesis (`--checks
all`: no 5xx, responses as documented, schema-valid requests accepted, schema-violating ones
refused, Allow headers right, ...). The router must publish what it enforces (docs/ROUTER.md).

Two runs, both bounded (`-n`, a fixed seed): every operation, the admin ones included, on the
app under uvicorn with the keyword engine (a reload or rollback there costs nothing); and every
operation except reload/rollback on `switchboard serve` with the real vLLM engine on the tiny
model. Results: docs/RELIABILITY.md.
"""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from support.fakes import FakeEngine, make_settings
from support.servers import Server
from test_api_limits import uvicorn_serving

TOKEN = "fuzz-admin-token-0123456789abcdef"
SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))


def schemathesis(base: str, report: Path, *extra: str, examples: int = 25) -> tuple[int, str]:
    """`schemathesis run` against BASE/openapi.json; (exit code, its output)."""
    cmd = [
        SCHEMATHESIS,
        "run",
        f"{base}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(examples),
        "--seed",
        "20261130",
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
        "--no-color",
        *extra,
    ]
    # its cache (.schemathesis/) goes beside the report, not into the checkout
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=report.parent)
    output = done.stdout + done.stderr
    generated = re.search(r"(\d+) generated", output)
    print(f"schemathesis: {generated.group(0) if generated else 'no summary'}; exit {done.returncode}")
    return done.returncode, output


def junit_failures(report: Path) -> tuple[int, int]:
    """(test cases, failures + errors) from schemathesis' JUnit report."""
    suite = ET.parse(report).getroot()
    cases = suite.findall(".//testcase")
    bad = [c for c in cases if c.find("failure") is not None or c.find("error") is not None]
    return len(cases), len(bad)


@pytest.mark.slow
def test_fuzz_every_operation_on_the_app(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, admin_token=TOKEN)
    with uvicorn_serving(settings, FakeEngine()) as base:
        code, output = schemathesis(base, tmp_path / "junit.xml", examples=30)
    operations, failed = junit_failures(tmp_path / "junit.xml")
    assert code == 0 and failed == 0, output[-6000:]
    assert operations >= 12, output[-3000:]  # every operation was exercised


@pytest.mark.slow
def test_fuzz_the_real_router_on_vllm(tmp_path: Path, router_model: Path) -> None:
    server = Server(
        router_model,
        f"sqlite:///{tmp_path / 'log.db'}",
        tmp_path / "server",
        extra_env={"SWITCHBOARD_ADMIN_TOKEN": TOKEN},
    )
    with server:
        code, output = schemathesis(
            server.base_url,
            tmp_path / "junit.xml",
            "--exclude-path-regex",
            "^/v1/admin/(reload|rollback)$",  # an engine load each: covered by the swap tests
            examples=25,
        )
        log = server.log_tail()
    operations, failed = junit_failures(tmp_path / "junit.xml")
    assert code == 0 and failed == 0, output[-6000:]
    assert operations >= 10, output[-3000:]
    assert "Traceback" not in log, log
