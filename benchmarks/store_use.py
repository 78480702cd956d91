"""The cost of tracking use on a hit (LRU eviction needs to know what was used last).

A hit (:meth:`Store.get`) reads and verifies the entry, checks its values are
there, and then marks the entry as used (one ``utime`` of its file).  This
times ``get`` on a warm page cache, with and without that mark, over the
entries of a notebook-sized cache, and puts the difference against the warm
Run All of ``benchmarks/run.py`` (one hit per cell).

    .venv/bin/python benchmarks/store_use.py [--entries 40] [--rounds 200]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np

from incrcell.serialise import dumps
from incrcell.store import Entry, Signer, open_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=40, help="cells (one hit each)")
    parser.add_argument("--rounds", type=int, default=200, help="rounds of one hit per entry")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        store = open_store(directory, signer=Signer(b"k" * 32), housekeeping=False)
        keys = []
        for index in range(args.entries):
            digest, key = f"{index:032x}", f"{index + 10**6:032x}"
            store.put_value(digest, dumps(np.arange(1000) + index))
            store.put(
                Entry(
                    key=key,
                    source=f"x{index} = f()",
                    variables={f"x{index}": digest},
                    deleted=[],
                    outputs=[{"type": "stream", "text": "out\n"}],
                    result=None,
                    duration=0.1,
                    created=time.time(),
                    components={"a": "b" * 200},
                    bundle=digest,
                )
            )
            keys.append(key)
        touch = store.backend.touch

        def round_time() -> float:
            start = time.perf_counter()
            for key in keys:
                store.get(key)
            return (time.perf_counter() - start) / len(keys)

        tracked, untracked = [], []
        for _ in range(args.rounds):  # interleaved, so that drift hits both alike
            store.backend.touch = touch
            tracked.append(round_time())
            store.backend.touch = lambda name: True
            untracked.append(round_time())
        store.backend.touch = touch
        with_use, without = statistics.median(tracked), statistics.median(untracked)
        cost = with_use - without
        print(f"get() per hit, median of {args.rounds} rounds over {args.entries} entries:")
        print(f"  tracking use (utime of the entry): {with_use * 1e6:8.1f} µs")
        print(f"  without tracking:                  {without * 1e6:8.1f} µs")
        print(f"  cost of tracking use per hit:      {cost * 1e6:8.1f} µs")
        print(
            f"  for a {args.entries}-cell warm Run All: {cost * args.entries * 1e3:.3f} ms "
            f"({cost * args.entries / 1.8 * 100:.3f} % of the 1.8 s warm run in results.md)"
        )


if __name__ == "__main__":
    main()
