"""Privacy audit: does a synthetic set copy training studies? audit.py runs it (`medsynth audit`); search.py finds each
study's nearest training study (descriptors.py: its first, plain stage), calibrate.py sets the thresholds on the
holdout, plant.py makes the planted copies that measure detection power, membership.py attacks the model and
report.py writes the HTML page. The embedding channel's encoder is medsynth.models.encoder (the evaluation's feature
space too); the run's real studies come from medsynth.runs.real."""
