"""ics2-streams: file ICS2 Entry Summary Declarations from booking events and act on customs' answers."""

__version__ = "0.1.0"
