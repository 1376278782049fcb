"""Hyperparameter search (``lmcraft tune``, on Optuna). The training doctor that diagnoses every run lives
below the stages, in ``train/doctor.py``, because the shared finish of every stage calls it."""
