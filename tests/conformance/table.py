#!/usr/bin/python3
"""Collects the conformance programs' CONFORMANCE lines from a meson test
log into the table of docs/conformance.md (element x situation).

  table.py BUILD/meson-logs/testlog.json [docs/conformance.md]

With a second argument it rewrites the table between the markers
<!-- table --> and <!-- /table --> of that file; else it prints it. Exits 1
when a situation of an element is missing or failed."""
import json
import sys

SITUATIONS = ["flushing-seek", "flush", "eos-no-data", "props-playing",
              "renegotiation", "odd-sizes", "no-tile-meta", "zero-area"]


def collect(log):
    cells = {}
    for line in open(log):
        rec = json.loads(line)
        if "conformance" not in rec.get("name", ""):
            continue
        for out in rec.get("stdout", "").splitlines():
            parts = out.split(" ", 4)
            if len(parts) < 4 or parts[0] != "CONFORMANCE":
                continue
            el, sit, res = parts[1], parts[2], parts[3]
            detail = parts[4] if len(parts) > 4 else ""
            cell = cells.setdefault((el, sit), [True, []])
            cell[0] &= res == "ok"
            cell[1].append(detail)
    return cells


def table(cells):
    elements = sorted({el for el, _ in cells})
    rows = ["| element | " + " | ".join(SITUATIONS) + " |",
            "|---|" + "---|" * len(SITUATIONS)]
    bad = []
    for el in elements:
        row = []
        for sit in SITUATIONS:
            cell = cells.get((el, sit))
            if cell is None:
                row.append("MISSING")
                bad.append(f"{el} {sit}: not reported")
            elif not cell[0]:
                row.append("FAIL")
                bad.append(f"{el} {sit}: " + "; ".join(cell[1]))
            elif all(d.startswith("n/a") for d in cell[1]):
                row.append("n/a")
            else:
                row.append(f"ok ({len(cell[1])})")
        rows.append(f"| {el} | " + " | ".join(row) + " |")
    rows += ["", "What each program saw (its CONFORMANCE lines):", ""]
    for el in elements:
        for sit in SITUATIONS:
            for d in (cells.get((el, sit)) or [True, []])[1]:
                rows.append(f"- {el} / {sit}: {d.replace('|', '/')}")
    return "\n".join(rows), bad


def main():
    cells = collect(sys.argv[1])
    text, bad = table(cells)
    if len(sys.argv) > 2:
        doc = open(sys.argv[2]).read()
        a, b = doc.index("<!-- table -->"), doc.index("<!-- /table -->")
        open(sys.argv[2], "w").write(doc[:a] + "<!-- table -->\n" + text + "\n" + doc[b:])
    else:
        print(text)
    for b in bad:
        print("conformance:", b, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
