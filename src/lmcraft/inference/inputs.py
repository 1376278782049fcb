"""What ``lmcraft predict --file`` reads: one input per line of a text file (blank lines included, so that
output line N answers input line N), one object per record of a JSONL, CSV or TSV file (each given to the
task's ``parse_input``), or a file in the task's own format (SQuAD / CMRC ``.json`` for QA). Files are
decoded as ``--encoding`` says (default: UTF-8, else GB18030)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmcraft.data.readers import read_text, records, text_lines
from lmcraft.inference.predictor import Predictor


def read_inputs(predictor: Predictor, path: str | Path) -> list[Any]:
    """The examples of ``path`` for ``predictor``'s task, labels optional."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    encoding = predictor.fields.encoding
    if suffix in (".jsonl", ".csv", ".tsv"):
        return [predictor.task.parse_input(record, predictor.fields, number)
                for number, record in records(path, encoding)]
    if suffix == ".json":
        return predictor.read(path, labelled=False)
    lines = text_lines(read_text(path, encoding))
    return [predictor.task.parse_input(line.strip(), predictor.fields, n) for n, line in enumerate(lines, 1)]
