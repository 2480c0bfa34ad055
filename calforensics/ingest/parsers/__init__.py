"""One module per input format: bytes or lines in, a documented table and anomaly rows out.

A parser never raises on bad input and never looks at another format's table.
"""
