"""Privacy audit: does a synthetic set copy training studies? audit.py runs it (`medsynth audit`); search.py finds
each study's nearest training study, calibrate.py sets the thresholds on the holdout, plant.py makes the planted
copies that measure detection power, membership.py attacks the model, encoder.py is the embedding channel and
report.py writes the HTML page."""
