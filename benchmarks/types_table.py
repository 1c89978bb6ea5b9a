#!/usr/bin/env python3
"""benchmarks/types_table.py — the per-type decode table of benchmarks/README.md from
`sampan bench --json` files (schema sampan-bench-1), one row per decode run:

    benchmarks/types_table.py bench.json [more.json ...]

Columns: the file's type label and weight mix, decode tokens/s, weight GB/s, the fraction of
the run's best-of read ceiling (%read) and the median fraction of the adjacent read passes
(%adj, the figure the targets use; method in benchmarks/README.md). Standard library only."""
import json
import os
import sys


def rows(path):
    doc = json.load(open(path))
    ceil = {c["threads"]: c for c in doc.get("ceilings", [])}
    for r in doc.get("runs", []):
        if r.get("test") != "tg":
            continue
        c = ceil.get(r.get("threads"), {})
        yield (os.path.basename(r["model"]), r.get("type", "?"), r.get("weight_mix", ""),
               r["threads"], r["tokens_per_s"], r["weight_gbs"],
               100.0 * r["weight_gbs"] / c["read_gbs"] if c.get("read_gbs") else float("nan"),
               100.0 * r.get("frac_read_adjacent", float("nan")))


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    print("| model | type | weight bytes by type | threads | decode tok/s | weight GB/s | %read | %adj |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for path in argv[1:]:
        for m, t, mix, th, tps, gbs, rd, adj in rows(path):
            print(f"| {m} | {t} | {mix} | {th} | {tps:.2f} | {gbs:.2f} | {rd:.1f} | {adj:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
