"""Party isolation on the broker.

``acls``: who may do what, as plain data (pure); ``onboarding``: putting it in place on a secured broker;
``kafka_admin``: the ACL and SCRAM admin requests aiokafka lacks; ``tls``: the local broker's private CA.
"""
