"""A deterministic stand-in for the EU's ICS2 common repository: filings in, notifications out. No Kafka here."""

from streams.simulator.customs import CustomsSimulator, Outbound
from streams.simulator.filing import FilingFacts, read_filing
from streams.simulator.risk import Outcome, RiskRule, RiskScript, ScriptedRejection

__all__ = [
    "CustomsSimulator",
    "FilingFacts",
    "Outbound",
    "Outcome",
    "RiskRule",
    "RiskScript",
    "ScriptedRejection",
    "read_filing",
]
