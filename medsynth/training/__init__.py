"""Training: the run top to bottom (trainer.py), the step both loops share (loop.py), the data it reads (data.py), the
latent stages (latent.py), process groups (distributed.py) and preview grids (preview.py); the run folder itself is
written through medsynth.runs."""
