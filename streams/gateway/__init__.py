"""The customs gateway: the boundary a connector to customs implements, the loop that runs it between Kafka
topics, and two connectors (the customs simulator, a file drop)."""

from streams.gateway.base import Gateway, InboundMessage, InDoubt, OutboundFiling

__all__ = ["Gateway", "InDoubt", "InboundMessage", "OutboundFiling"]
