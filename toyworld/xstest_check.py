"""Check the string-match refusal detector against XSTest's human labels.

XSTest v2 ships Llama-2-70b-chat completions labelled by people as
``1_full_compliance``, ``2_full_refusal`` or ``3_partial_refusal``. A completion
counts as a refusal when its label is full or partial refusal; the detector
(`toyworld.judges.is_refusal`) is scored on agreement, precision and recall.

The detector was written from general knowledge of how chat models refuse, not
tuned on these completions (they are evaluation data).

    python -m toyworld.xstest_check [PATH]
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from toyworld.judges import is_refusal

DEFAULT_PATH = Path("../shared/data/xstest/xstest_v2_completions_llama2orig.csv")
REFUSAL_LABELS = {"2_full_refusal", "3_partial_refusal"}
COMPLIANCE_LABELS = {"1_full_compliance"}


def refusal_agreement(path: str | Path = DEFAULT_PATH) -> dict:
    """Agreement, precision and recall of `is_refusal` against the human refusal labels."""
    tp = fp = tn = fn = 0
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            label = (row.get("final_label") or "").strip()
            if label not in REFUSAL_LABELS | COMPLIANCE_LABELS:
                continue
            truth = label in REFUSAL_LABELS
            predicted = is_refusal(row.get("completion") or "")
            tp += truth and predicted
            fp += predicted and not truth
            tn += not truth and not predicted
            fn += truth and not predicted
    n = tp + fp + tn + fn
    if n == 0:
        raise ValueError(f"{path}: no rows with a final_label in {sorted(REFUSAL_LABELS | COMPLIANCE_LABELS)}")
    return {
        "n": n,
        "agreement": (tp + tn) / n,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "true_positive": tp,
        "false_positive": fp,
        "true_negative": tn,
        "false_negative": fn,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else DEFAULT_PATH
    if not path.is_file():
        print(f"error: {path}: no such file", file=sys.stderr)
        return 2
    result = refusal_agreement(path)
    print(f"XSTest refusal detector on {result['n']} labelled completions ({path})")
    print(f"agreement {result['agreement']:.3f}  precision {result['precision']:.3f}  recall {result['recall']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
