#!/usr/bin/env python3
"""Merges the per-rank results of `nanochat eval base --rank R --world W` (bench/core_gpu.sh).

Each argument is JSON:LOG for one rank: eval_base.json when the rank finished, else the
per-task lines of its log ("core: LABEL TYPE K-shot n=N acc A centered C (S s)"). Counts are
summed per task; accuracy, centered accuracy (the bundle's random baselines) and CORE are
recomputed as nanochat does. A task that some rank did not finish is reported as partial and
left out of CORE. Writes OUT.csv and OUT.json and prints the table.
"""
import argparse, csv, json, os, re, sys

LINE = re.compile(r"^core: (\S+)\s+(\S+)\s+(\d+)-shot n=(\d+)\s+acc ([0-9.]+) centered [-+0-9.]+ \(([0-9.]+) s\)")


def rank_results(spec):
    js, log = spec.split(":", 1)
    if os.path.exists(js):
        tasks = json.load(open(js))["tasks"]
        return {k: v for k, v in tasks.items() if "skipped" not in v}, "json"
    out = {}
    for ln in open(log, errors="replace") if os.path.exists(log) else []:
        m = LINE.match(ln)
        if m:
            n, acc = int(m.group(4)), float(m.group(5))
            out[m.group(1)] = {"type": m.group(2), "fewshot": int(m.group(3)), "n": n, "correct": round(acc * n),
                               "seconds": float(m.group(6))}
    return out, "log"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("ranks", nargs="+")
    a = ap.parse_args()
    base = {}
    with open(os.path.join(a.bundle, "eval_meta_data.csv"), newline="") as f:
        for row in csv.DictReader(f):
            base[row["Eval Task"]] = float(row["Random baseline"])
    order = [ln.split(":", 1)[1].strip() for ln in open(os.path.join(a.bundle, "core.yaml")) if ln.strip().startswith("label:")]
    parts = [rank_results(s) for s in a.ranks]
    rows, cen = [], []
    for label in order:
        got = [p[0][label] for p in parts if label in p[0]]
        if not got:
            continue
        n = sum(g["n"] for g in got)
        c = sum(g["correct"] for g in got)
        acc = c / n if n else 0.0
        b = base[label] / 100.0
        centered = (acc - b) / (1.0 - b)
        complete = len(got) == len(parts)
        if complete:
            cen.append(centered)
        rows.append({"task": label, "type": got[0]["type"], "fewshot": got[0]["fewshot"], "n": n, "correct": c,
                     "accuracy": acc, "centered": centered, "baseline": base[label],
                     "seconds": max(g["seconds"] for g in got), "complete": complete})
    core = sum(cen) / len(cen) if cen else None
    with open(a.out + ".csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task", "type", "fewshot", "n", "correct", "accuracy", "centered", "baseline", "seconds", "complete"])
        for r in rows:
            w.writerow([r["task"], r["type"], r["fewshot"], r["n"], r["correct"], "%.6f" % r["accuracy"], "%.6f" % r["centered"],
                        r["baseline"], "%.1f" % r["seconds"], int(r["complete"])])
        w.writerow(["CORE", "", "", "", "", "", "%.6f" % core if core is not None else "", "", "", len(cen)])
    json.dump({"core": core, "tasks_in_core": len(cen), "tasks": rows, "sources": [p[1] for p in parts]}, open(a.out + ".json", "w"), indent=2)
    for r in rows:
        print("%-34s %-17s %2d-shot n=%-6d acc %.4f centered %+.4f %7.1f s%s" % (r["task"], r["type"], r["fewshot"], r["n"], r["accuracy"],
              r["centered"], r["seconds"], "" if r["complete"] else "  (partial)"))
    print("CORE %s over %d tasks (sources: %s)" % ("%.4f" % core if core is not None else "n/a", len(cen), ",".join(p[1] for p in parts)))


if __name__ == "__main__":
    sys.exit(main())
