"""GeoScenes: a deterministic synthetic remote-sensing world, generated from a seed (no download)."""
