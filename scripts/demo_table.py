#!/usr/bin/env python3
"""Prints the demo's final table: each task's primary metric for the initial model, the trained
model and (for its one task) the model `modsquad extract` took out of it, whether training
improved each task, the parameters and FLOPs of the full and the extracted model, and the time.

    scripts/demo_table.py INIT.json TRAINED.json [--extracted EXTRACTED.json
                          --extract-summary SUMMARY.json] [--seconds S]

INIT, TRAINED and EXTRACTED are metrics JSON files of `modsquad eval`; SUMMARY is what
`modsquad extract --json` wrote. The first metric of each task is its primary metric; lower is
better for errors (l1, rmse, mse, angle_mean), higher for the rest. Exit status 1 when the
trained model is not better than the initial one on every task, or when the extracted model's
metrics lack its task.
"""
import argparse
import json
import sys

LOWER_IS_BETTER = {"l1", "rmse", "mse", "angle_mean"}


def load_metrics(path):
    with open(path) as fh:
        return {k: v for k, v in json.load(fh).items() if isinstance(v, dict)}


def cell(v):
    return f"{v:10.4g}" if isinstance(v, (int, float)) else f"{'-':>10s}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("initial")
    ap.add_argument("trained")
    ap.add_argument("--extracted", help="metrics JSON of the extracted model")
    ap.add_argument("--extract-summary", help="the JSON of modsquad extract --json")
    ap.add_argument("--seconds", type=float)
    a = ap.parse_args()
    init, trained = load_metrics(a.initial), load_metrics(a.trained)
    extracted = load_metrics(a.extracted) if a.extracted else {}
    summary = None
    if a.extract_summary:
        with open(a.extract_summary) as fh:
            summary = json.load(fh)

    labels = ["initial", "trained"] + (["extracted"] if a.extracted else [])
    print()
    print(f"{'task':22s} {'metric':10s} " + " ".join(f"{l:>10s}" for l in labels) + "  better?")
    all_better = True
    for task, m in init.items():
        name = next(iter(m))
        vals = [init[task].get(name), trained.get(task, {}).get(name)]
        if a.extracted:
            vals.append(extracted.get(task, {}).get(name))
        lower = name in LOWER_IS_BETTER
        better = vals[1] is not None and vals[0] is not None and (vals[1] < vals[0] if lower else vals[1] > vals[0])
        all_better &= bool(better)
        cells = " ".join(cell(v) for v in vals)
        print(f"{task:22s} {name:10s} {cells}  {'yes' if better else 'NO'} ({'lower' if lower else 'higher'} is better)")

    ok = True
    if summary:
        task = summary["task"]
        if task not in extracted:
            print(f"\nthe extracted model's metrics ({a.extracted}) lack its task {task}", file=sys.stderr)
            ok = False
        kept = sum(len(l["kept"]) for l in summary["layers"])
        total = sum(l["experts"] for l in summary["layers"])
        print(f"\nextracted {task} model: {kept} of {total} experts kept "
              f"(usage above {summary['threshold']:g}% of its tokens, at least top-k per layer)")
        pf, pe = summary["params_full"], summary["params_extracted"]
        print(f"  parameters      full model {pf / 1e6:8.3f} M   extracted {pe / 1e6:8.3f} M  ({100 * pe / pf:.1f}%)")
        ff, fe, fr = summary["flops_full"], summary["flops_extracted"], summary["flops_extracted_routed"]
        print(f"  GFLOPs / image  full model {ff / 1e9:8.4f}     extracted {fe / 1e9:8.4f}    "
              f"({fr / 1e9:.4f} with the calibration routing)")
    if a.seconds is not None:
        print(f"\ntotal time: {a.seconds:.0f} s")
    if not all_better:
        print("\nthe trained model is NOT better than the initial one on every task", file=sys.stderr)
    if not all_better or not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
