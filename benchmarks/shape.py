"""The method's shape over both worlds, next to the paper's ablation rows.

Run ``python benchmarks/shape.py`` after ``benchmarks/synthetic.py
--save``: it reads the ablation rows of ``benchmarks/results/synthetic.json``
and writes ``benchmarks/results/shape.rst``, a table of each row's gain
over the raw logits (row I) on the worst family and on average, apart for
the synthetic families (``generated`` and :data:`dsolo_sk.datasets.
SYNTHETIC_FAMILIES`) and the CLIP-like ones (:data:`dsolo_sk.datasets.
CLIP_FAMILIES`), with the paper's gain of the same row (its ablation
table, average over VOC, COCO-Stuff, Cityscapes and ADE20K, ViT-B/16).
The method page includes the table.
"""

import json
from pathlib import Path

import numpy as np

from dsolo_sk.datasets import CLIP_FAMILIES

RESULTS = Path(__file__).resolve().parent / "results"
#: The paper's average of rows I-VI (ViT-B/16, four datasets).
PAPER = {"I": 8.9, "II": 17.8, "III": 19.1, "IV": 19.6, "V": 40.0,
         "VI": 40.8}
ROWS = ("I ", "II ", "III ", "IV ", "V ", "VI ", "plain ref.")


def shape(rows):
    """(label, paper gain, synthetic worst/mean, CLIP worst/mean) per row."""
    ablation = [r for r in rows if r.get("table") == "Ablation"]
    raw = ablation[0]["miou"]
    out = []
    for r in ablation:
        label = r["row"].strip()
        if not any(label.startswith(k.strip() + " ") or k in label
                   for k in ROWS):
            continue
        gain = {f: r["miou"][f] - raw[f] for f in raw}
        clip = [g for f, g in gain.items() if f in CLIP_FAMILIES]
        synth = [g for f, g in gain.items() if f not in CLIP_FAMILIES]
        key = label.split()[0]
        paper = PAPER.get(key)
        out.append((label, None if paper is None else paper - PAPER["I"],
                    min(synth), float(np.mean(synth)), min(clip),
                    float(np.mean(clip))))
    return out


def to_rst(table):
    lines = [".. list-table::", "   :header-rows: 1", "",
             "   * - row", "     - paper (mean gain)",
             "     - synthetic worst", "     - synthetic mean",
             "     - CLIP-like worst", "     - CLIP-like mean"]
    for label, paper, sw, sm, cw, cm in table:
        lines.append(f"   * - {label}")
        lines.append("     - " + ("" if paper is None else f"{paper:+.1f}"))
        lines += [f"     - {v:+.1f}" for v in (sw, sm, cw, cm)]
    return "\n".join(lines) + "\n"


def main():
    rows = json.loads((RESULTS / "synthetic.json").read_text())
    text = to_rst(shape(rows))
    (RESULTS / "shape.rst").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
