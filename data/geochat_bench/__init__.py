"""GeoChat-Bench region tasks: referring expressions and region captioning."""
