"""Sequence classification of single texts or pairs (``task.py``), prompt-based few-shot classification
(``prompt.py``) and the TF-IDF baseline (``baseline.py``)."""
