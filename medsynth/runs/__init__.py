"""The run room: the run folder and synthetic sets, the one reader every later stage asks.

layout.py names every file of a run folder and of a synthetic set; checkpoint.py saves and loads checkpoints;
rules.py says which settings may differ between a run's sessions and stages (and refuses what cannot continue);
loaded.py is a finished run loaded to sample and decode; synthset.py reads synthetic sets; real.py gives the run's
real training and holdout studies, preprocessed as training did; lineage.py says what privacy a run's weights
have and which datasets they learnt from.
"""

from medsynth.runs.layout import RunFolder, SetFolder

__all__ = ["RunFolder", "SetFolder"]
