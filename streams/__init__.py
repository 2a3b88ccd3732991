"""ics2-streams: file ICS2 Entry Summary Declarations from booking events and act on customs' notifications.

The project's words (record, event, alert, notification, filing, draft, plan, ledger entry, trail, ...) each have
one meaning, listed in ``docs/glossary.md``; the layers and the data's way through them are ``docs/architecture.md``.
"""

__version__ = "0.1.0"
