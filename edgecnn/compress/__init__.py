"""Model compression: one training engine (:mod:`.engine`), losses, distillation, distribution.

Pruning and QAT fine-tuning come next and train through :func:`edgecnn.compress.engine.fit`.
"""
