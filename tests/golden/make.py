"""Regenerate the golden cache files: ``python tests/golden/make.py``.

A small cache written by today's code through a real kernel (``%load_ext
incrcell``), committed under ``tests/golden/v<FORMAT_VERSION>/`` so that
tests/test_golden.py can check that today's code still reads it and still
writes the same thing.  Regenerate it when the cache format changes, together
with a bump of ``incrcell.store.codec.FORMAT_VERSION`` (a format change
without a bump is what the golden test exists to catch), and commit the new
directory in place of the old one.

The files are signed with :data:`KEY`, a test-only key: it protects nothing
and must never sign a real cache.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/, for kernel.py

from incrcell.store import FORMAT_VERSION, KEY_ENV  # noqa: E402
from incrcell.store.signing import private_text  # noqa: E402

from kernel import LOAD, Kernel, ok  # noqa: E402

#: TEST-ONLY signing key of the golden files (public, in this repository: never use it).
KEY = private_text(hashlib.sha256(b"incrcell golden files: public, test only").digest())

#: The cells, one per kind of thing an entry holds; run in this order in one kernel.
CELLS = [
    LOAD,
    ("values", "x = 42\ns = 'golden'\nlst = [1, 'two', 3.0, None]"),
    ("array", "import numpy as np\narr = np.arange(12, dtype='int64').reshape(3, 4)"),
    # over the size that travels inside the entry's file: a value file of its own
    ("big", "big = np.arange(10_000, dtype='int64')"),
    ("frame", "import pandas as pd\ndf = pd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})"),
    ("function", "def area(w, h=2):\n    return w * h"),
    (
        "outputs",
        "print('printed')\n"
        "display({'text/plain': 'shown', 'text/html': '<b>shown</b>'}, raw=True)\n"
        "x + 1",
    ),
    ("file", "import pathlib\npathlib.Path('out.txt').write_text('written\\n')"),
]

#: Where the files of the current format are.
GOLDEN = HERE / f"v{FORMAT_VERSION}"


def write_cache(directory: Path) -> Path:
    """Run :data:`CELLS` in a fresh kernel working in ``directory``; returns the cache's
    format directory (``<cache>/v<FORMAT_VERSION>``) it wrote."""
    work, cache = directory / "work", directory / "cache"
    work.mkdir(parents=True)
    env = {
        "INCRCELL_CACHE_DIR": str(cache),
        KEY_ENV: KEY,
        "XDG_CONFIG_HOME": str(directory / "config"),
        "MPLCONFIGDIR": str(directory / "matplotlib"),
    }
    kernel = Kernel(work, env)
    try:
        executions = ok(kernel.run_all(CELLS))
        assert not any(e.restored for e in executions), "the cache was not empty"
    finally:
        kernel.shutdown()
    written = cache / f"v{FORMAT_VERSION}"
    entries = list((written / "entries").rglob("*"))
    cached = [path for path in entries if path.is_file()]
    assert len(cached) == len(CELLS) - 1, f"{len(cached)} of {len(CELLS) - 1} cells were cached"
    return written


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        written = write_cache(Path(directory))
        for old in HERE.glob("v*"):
            shutil.rmtree(old)
        shutil.copytree(written, GOLDEN)
    files = sorted(p.relative_to(HERE) for p in GOLDEN.rglob("*") if p.is_file())
    print(f"wrote {len(files)} files under {GOLDEN}:", *files, sep="\n  ")


if __name__ == "__main__":
    main()
