"""Extractive question answering over strided windows (``task.py``)."""
