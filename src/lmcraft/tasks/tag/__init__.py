"""Named-entity recognition as token classification (``task.py``) and the feature-CRF baseline (``baseline.py``)."""
