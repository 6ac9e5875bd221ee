"""Functional Map of the World (fMoW-rgb): geo-located satellite images with a functional category."""
