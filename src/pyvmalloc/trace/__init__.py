"""Tracepoints, trace parsing, live capture and replay.

* :mod:`pyvmalloc.trace.events` — the three ``vmalloc:`` events as records, rendered
  in the kernel's ftrace text format;
* :mod:`pyvmalloc.trace.parse` — strict, fast parsers of ftrace text;
* :mod:`pyvmalloc.trace.snapshot` — ``/proc/vmallocinfo`` parser;
* :mod:`pyvmalloc.trace.capture` — recording a real kernel's events (root + tracefs);
* :mod:`pyvmalloc.trace.replay` — replaying a capture through the model.
"""
