"""Training: one readable loop (trainer.py), the data it reads (data.py), checkpoints (checkpoint.py)."""
