"""VRSBench: 512x512 DOTA/DIOR patches with a caption, referring expressions and QA pairs each."""
