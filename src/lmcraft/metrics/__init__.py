"""Metric adapters, one module per kind of output: ``classification`` (scikit-learn), ``entities`` (entity-level
P/R/F1), ``qa`` (SQuAD / CMRC exact match and F1), ``generation`` (BLEU, chrF, ROUGE) and ``placeholders``
(the placeholders a translated software message must keep).

A bottom layer: these modules import nothing of lmcraft but ``lmcraft.text`` (and each other).
"""
