"""The audit trail: hash-chained records per MBL, their replay into history, and their archive (no Kafka here)."""
