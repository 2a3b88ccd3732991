"""The ICS2 domain core: consolidations, filing plans, rules. Imports no Kafka, asyncio or Avro."""
