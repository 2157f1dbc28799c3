"""The snapshot: a consistent read of the file, copied into Postgres (DESIGN invariant 4).

``frozen``  the consistent read (a file copy, or one read transaction) and its log position
``copier``  one table, or one rowid range of it, chunk by chunk, resumable
``units``   tables split into rowid ranges, copied by worker processes, finished when done
``phase``   the snapshot phase of a run: census, plan, create, copy, record the cursor
"""
