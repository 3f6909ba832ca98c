"""Test-suite root: makes ``tests/`` importable (pytest prepends the folder of every
conftest), so helpers shared across test folders live here once (``shapes_images``)."""
