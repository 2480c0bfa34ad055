"""Stage 1, ingest: from a bundle on disk to raw tables.

In: a .tgz/.tar, a folder or one capture. Out: the files found and what each is (artifacts), every text
dump parsed into its table (parsers/, one module per format), every capture indexed and decoded into
the packets table, and an anomaly row for everything that could not be read.
Must not: say what rules, routes or addresses mean for traffic (meaning/), or relate one packet to
another (join/).
"""
