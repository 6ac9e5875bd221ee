"""Remote-sensing image-caption sets in Karpathy-style JSON (RSICD, RSITMD, UCM-/Sydney-Captions)."""
