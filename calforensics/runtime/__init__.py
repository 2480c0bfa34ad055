"""The execution machinery any stage may use: where work runs and how memory is kept bounded.

In: work handed over by a stage (a decoder and frames to run it on, functions over ranges) and
sizes. Out: the same results wherever the work ran: inline, a local process pool or threads
(parallel.py), a Dask cluster, or over tables in mapped files and partitions on disk (memory.py,
partitions.py). Must not: import any stage; stages pass in the work they want run.
"""
