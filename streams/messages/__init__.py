"""ICS2 XML both ways: filings rendered for customs, notifications parsed from customs. No Kafka here."""

#: Every ICS2 v2 element is qualified in this namespace.
NS = "urn:wco:datamodel:eu:ics2:2"
