"""The sidebar's frontend unit tests (jest, in labextension/test), run by the Python suite.

They need labextension/node_modules, which the README's install command
creates (it builds the extension with npm).  Outside CI a checkout without
them is skipped; in CI (``CI`` set) it fails, so the tests cannot silently
stop running.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

LABEXTENSION = Path(__file__).resolve().parent.parent / "labextension"


def test_frontend_unit_tests(npm: str) -> None:
    result = subprocess.run(
        [npm, "test", "--", "--ci"], cwd=LABEXTENSION, capture_output=True, text=True, timeout=300
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    passed = re.search(r"Tests:\s+(\d+) passed, (\d+) total", report)
    assert passed and passed.group(1) == passed.group(2), report
