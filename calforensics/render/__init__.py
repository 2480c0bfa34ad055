"""Stage 5, render: an Analysis into the files an incident ticket takes.

In: an Analysis (analyses/). Out: report.html (jinja2, autoescaped), report.md, findings.json and the
tables as CSV or Parquet (report.py writes them; markdown.py, plots.py and templates/ draw them).
Must not: decide anything about the network; what the report says, the analyses found.
"""
