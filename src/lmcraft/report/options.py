"""The options of ``lmcraft report``."""

from __future__ import annotations

from dataclasses import dataclass, field

from lmcraft.config import opt
from lmcraft.data.readers import Fields


@dataclass
class ReportConfig:
    model_dir: str = opt("", "the model directory to evaluate")
    data: str = opt("", "a labelled file in the model's task format (e.g. test.jsonl)")
    out: str = opt("report", "directory to write report.html and report.json to")
    compare: list[str] = opt([], "other model directories scored on the same examples: paired bootstrap of each "
                                 "metric's difference and McNemar's exact test of accuracy")
    compare_predictions: list[str] = opt([], "NAME=FILE.jsonl: the labels another system gave the same examples, one "
                                             "JSON object with a \"label\" a line, in order (a baseline that is not "
                                             "a model directory); compared like --compare, without calibration")
    dev: str = opt("", "a labelled dev file: fit temperature scaling on it and store T in MODEL_DIR/calibration.json "
                       "(predict, evaluate and serve then give calibrated probabilities)")
    slice_field: list[str] = opt([], "fields of the data file to slice the metrics by (besides text length)")
    checklist: str = opt("", "a YAML of extra perturbations for the robustness tests (the format of the built-in "
                             "lmcraft/report/checklist.yaml)")
    checklist_examples: int = opt(500, "examples the robustness tests perturb (a seeded sample; 0: all)")
    attributions: bool = opt(True, "integrated-gradients attributions of a few mistakes and correct answers")
    n_boot: int = opt(1000, "bootstrap resamples of every interval")
    seed: int = opt(0, "seed of the resamples and perturbations")
    n_errors: int = opt(10, "how many of the most confident mistakes to show")
    batch_size: int = opt(64, "examples per forward pass")
    fields: Fields = field(default_factory=Fields)
