"""``jobs/run.py`` loaded as a module: it is a script, not part of the package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "jobs" / "run.py"


def load_job_script():
    spec = importlib.util.spec_from_file_location("crossemo_job_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
