"""Bundled booking scenarios (the seed co-load), for the demo and for users trying the product."""

from pathlib import Path

#: The seed co-load of the ICS2 guide: one carrier MBL, a master loader and its co-loaders' HBL tree.
SEED_COLOAD = Path(__file__).with_name("seed-coload.json")
