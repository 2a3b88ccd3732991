"""Resources for running ics2-streams on a Kafka cluster the user already has (Kubernetes with Strimzi).

Everything here is generated from the topic catalogue and the onboarded parties, so the cluster's topics, users
and ACLs cannot drift from what the code reads and writes. Pure functions returning plain dicts; ``render`` turns
them into the YAML files under ``deploy/k8s``.
"""
