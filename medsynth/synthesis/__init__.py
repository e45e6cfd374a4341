"""Synthesis: a trained run plus a label spec -> synthetic studies (image [+ label map]) with provenance."""
