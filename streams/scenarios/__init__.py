"""Bundled booking scenarios (the seed co-load), for the demo and for users trying the product."""
