"""Relation extraction between two marked entities (``task.py``) and its TF-IDF baseline (``baseline.py``)."""
