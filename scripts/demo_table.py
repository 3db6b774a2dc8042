#!/usr/bin/env python3
"""Prints the demo's final table: each task's primary metric for the initial and the trained
model (and any further metrics files given), and whether training improved it.

    scripts/demo_table.py INIT.json TRAINED.json [MORE.json ...] [--seconds S]

The first metric of each task in a modsquad metrics JSON is its primary metric; lower is
better for errors (l1, rmse, mse, angle_mean), higher for the rest. Exit status 1 when the
trained model is not better than the initial one on every task.
"""
import argparse
import json
import sys

LOWER_IS_BETTER = {"l1", "rmse", "mse", "angle_mean"}


def primary(metrics):
    name, value = next(iter(metrics.items()))
    return name, value


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--seconds", type=float)
    a = ap.parse_args()
    runs = []
    for f in a.files:
        with open(f) as fh:
            runs.append({k: v for k, v in json.load(fh).items() if isinstance(v, dict)})
    labels = ["initial", "trained"] + [f"#{i}" for i in range(3, len(runs) + 1)]
    print()
    print(f"{'task':22s} {'metric':10s} " + " ".join(f"{l:>10s}" for l in labels) + "  better?")
    all_better = True
    for task, m in runs[0].items():
        name, _ = primary(m)
        vals = [r.get(task, {}).get(name) for r in runs]
        lower = name in LOWER_IS_BETTER
        better = vals[1] is not None and vals[0] is not None and (vals[1] < vals[0] if lower else vals[1] > vals[0])
        all_better &= bool(better)
        cells = " ".join(f"{v:10.4g}" if isinstance(v, (int, float)) else f"{'-':>10s}" for v in vals)
        print(f"{task:22s} {name:10s} {cells}  {'yes' if better else 'NO'} ({'lower' if lower else 'higher'} is better)")
    if a.seconds is not None:
        print(f"\ntotal time: {a.seconds:.0f} s")
    if not all_better:
        print("\nthe trained model is NOT better than the initial one on every task", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
