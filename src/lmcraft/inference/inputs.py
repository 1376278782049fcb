"""What ``lmcraft predict --file`` reads: one input per line of a text file (blank lines included, so that
output line N answers input line N), one object per record of a JSONL, CSV or TSV file (each given to the
task's ``parse_input``), or a file in the task's own format (SQuAD / CMRC ``.json`` for QA)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from lmcraft.data.readers import jsonl_records
from lmcraft.inference.predictor import Predictor


def read_inputs(predictor: Predictor, path: str | Path) -> list[Any]:
    """The examples of ``path`` for ``predictor``'s task, labels optional."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return [predictor.task.parse_input(record, predictor.fields, number) for number, record in jsonl_records(path)]
    if suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",", quoting=csv.QUOTE_NONE
                                       if suffix == ".tsv" else csv.QUOTE_MINIMAL))
        return [predictor.task.parse_input(row, predictor.fields, number) for number, row in enumerate(rows, 2)]
    if suffix == ".json":
        return predictor.read(path, labelled=False)
    lines = path.read_text(encoding="utf-8").splitlines()
    return [predictor.task.parse_input(line.strip(), predictor.fields, n) for n, line in enumerate(lines, 1)]
