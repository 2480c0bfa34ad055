"""Stage 2, meaning: what a node's state says about traffic.

In: the ingested tables (rules, interfaces, routes, BPF NAT, service listings, artifacts). Out: each
rule's Calico and kube-proxy meaning (rules.py), service lookups (services.py), route lookups
(routing.py) and each node's dataplane (dataplane.py).
Must not: read files or decode packets (ingest/), or look at packets at all (join/).
"""
