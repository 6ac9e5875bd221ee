"""DIOR-RSVG visual grounding: referring expressions with one box each, on DIOR images."""
