"""Evaluation: each benchmark in a module of its own.

- :mod:`flashrna.evaluate.tracks`: ``evaluate-tracks``, per-track Pearson (Tables 1 and 3).
- :mod:`flashrna.evaluate.eqtl`: ``eqtl-benchmark``, GTEx fine-mapped eQTL Spearman (Table 2).
"""
