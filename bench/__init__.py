"""``make bench``: the pipeline's throughput and latency measured beside a raw aiokafka passthrough.

Run ``python -m bench`` (or ``--quick`` for a smoke run); results go to ``bench/results/`` and the terminal.
"""
