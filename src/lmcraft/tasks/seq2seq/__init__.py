"""Text-to-text generation and dialogue (``task.py``) and their baselines (``baseline.py``)."""
