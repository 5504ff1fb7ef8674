"""The examples are documentation: each must run as a user would run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_runs(podrun_home):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "MPU: a 550 km orbit takes 95.5 minutes" in out
    assert "'node': 'GPU'" in out
    assert "map: 1,000 calls in 1 job(s), sum of squares = 332833500" in out
    assert "caught the remote exception: ZeroDivisionError('cannot divide 1.0 by zero')" in out
    assert 'raise ZeroDivisionError(f"cannot divide {a} by zero")' in out
    assert "executor.py" not in out  # the remote traceback starts at the user's code
    assert "dividing 1.0 by 4.0 on the pod" in out
