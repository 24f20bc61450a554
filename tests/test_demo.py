"""`make demo` (`python -m router.demo`) end to end, non-interactively: every step shows, in order.

It runs on the session's trained MiniLM (`minilm_model`, so the demo's own training is skipped:
`switchboard train` is covered by test_train_e2e.py) with `--no-wait`, which stops the router
instead of waiting for Ctrl-C. The retrain is real, and so is its decision, whichever it is.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO

pytestmark = pytest.mark.slow

STEPS = [
    "1. Train",
    "already trained",
    "switchboard models register: v0001, the champion",
    "2. Serve",
    "ready at http://127.0.0.1:",
    "3. Route",
    "What's the weather like in Leeds tomorrow?",
    "test queries as traffic (POST /v1/route/batch)",
    "4. Review queue",
    "GET /v1/review?strategy=uncertainty&limit=30 (admin token): the 5 least certain of 30",
    "5. Feedback",
    " labelled: ",
    "6. Retrain",
    "switchboard retrain --promotion direct",
    "challenger v0002",
    "held-out feedback",
    "decision: ",
    "7. Served version",
    "Done in",
    "review inbox  http://127.0.0.1:",
    "metrics       http://127.0.0.1:",
    "router stopped (exit code 0)",
]


def test_demo_shows_every_step_in_order(minilm_model: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "router.demo", "--model", str(minilm_model), "--workdir", str(tmp_path),
         "--no-wait"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    at = 0
    for step in STEPS:
        found = out.find(step, at)
        assert found >= 0, f"{step!r} missing after position {at}:\n{out}"
        at = found + len(step)
    # the decision as the gate made it, and the served version that follows from it
    promoted = "decision: promoted" in out
    assert promoted or "decision: not promoted" in out
    served = "now serving v0002 (was v0001)" if promoted else "still v0001"
    assert served in out.split("7. Served version")[1]
    # quiet: none of the libraries' progress bars, load reports or INFO logs
    for noise in ("Map:", "Loading weights", "Writing model shards", "LOAD REPORT", "INFO", "it/s]"):
        assert noise not in out + proc.stderr
    assert re.search(r"\d+ labelled: \d+ answers confirmed, \d+ corrected", out)
    assert re.search(r"sign in with the admin token \S{16,}", out)
    assert (tmp_path / "logs" / "retrain.log").is_file()
