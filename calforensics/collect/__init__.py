"""The node collector: runs on a node (or in a network namespace) and writes a bundle.

In: a node's interfaces, a capture duration and options. Out: a bundle folder or .tgz of captures
and state dumps (collector.py) that ingest/ reads. Must not: use any stage of the analysis; it
stands before the pipeline, on machines that may only have the collector's few dependencies.
"""
