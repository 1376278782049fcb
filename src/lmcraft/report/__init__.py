"""``lmcraft report``: evaluate before you trust. One self-contained HTML file and a JSON of every number.

The report asks the model's ``Predictor`` what the head gives, never which task it is: a head that scores
a fixed set of classes (``Task.class_log_probs``) gets intervals, errors, calibration, slices and
invariance tests; predictions of generated text (a ``source`` and an ``output``) get generation checks; any
other head gets its task's own test metrics. One module per section:

- ``scored.py``: the predictions of a model on a file, as arrays (gold, probabilities, texts);
- ``uncertainty.py``: every metric with a 95% bootstrap interval; paired tests against other models;
- ``errors.py``: confusion matrix, per-class metrics, the most confident mistakes;
- ``calibration.py``: ECE, reliability diagram, temperature scaling fitted on a dev file;
- ``slices.py``: metrics by text length and by fields of the data file;
- ``robustness.py`` (with ``checklist.yaml``): CheckList-style invariance and directional tests;
- ``attributions.py``: integrated gradients (Captum) of confident mistakes and correct answers;
- ``generation.py``: new numbers, placeholders and names in generated text, copying, length, loops;
- ``plots.py`` (PNG figures, inline) and ``html.py`` (``template.html``); ``build.py`` runs them in order.
"""
