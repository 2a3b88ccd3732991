"""The ``ics2`` command line."""
