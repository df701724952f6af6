"""Model compression: training, knowledge distillation (pruning and QAT come next)."""
