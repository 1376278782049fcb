"""Text-to-text generation (``task.py``) and dialogue (``chat.py``) in either layout (``layouts.py``), and their
baselines (``baseline.py``)."""
