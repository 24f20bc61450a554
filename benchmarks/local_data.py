"""Where the benchmarks read the named datasets (banking77, clinc150): `SWITCHBOARD_DATA_DIR` when
set, else a local copy beside the checkout (`../shared/datasets`) when there is one, else the
Hugging Face Hub (training.data says which, and names both when neither can be read)."""

from __future__ import annotations

import os
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def use_local_datasets() -> None:
    if "SWITCHBOARD_DATA_DIR" not in os.environ and SHARED.is_dir():
        os.environ["SWITCHBOARD_DATA_DIR"] = str(SHARED)
