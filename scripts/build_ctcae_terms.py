"""Derive services/safety/ctcae/data/ctcae_v5_terms.csv from NCI's CTCAE v5.0 term table.

Run once by hand when the source changes:
    python scripts/build_ctcae_terms.py CTCAE_v5.0.csv > services/safety/ctcae/data/ctcae_v5_terms.csv
Keeps only what AE checks need: term, MedDRA code, SOC and which grades the term defines (" -" marks a
grade CTCAE does not define for that term).
"""

from __future__ import annotations

import csv
import sys


def main(source: str) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["term", "meddra_code", "soc", "grades"])
    with open(source, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            grades = "".join(str(g) for g in range(1, 6) if row[f"Grade {g}"].strip() not in ("", "-"))
            writer.writerow([row["CTCAE Term"].strip(), row["MedDRA Code"].strip(), row["MedDRA SOC"].strip(), grades])


if __name__ == "__main__":
    main(sys.argv[1])
