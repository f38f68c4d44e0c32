"""Past one machine: one execution seam (`seam.run_items`) that runs a list of independent items in this
process, in a local process pool, or on Ray actors, with per-item results saved atomically so an interrupted
driver resumes; `sweep` and `atlas_over` are the commands built on it (the timeline and overlay build use it too).
"""
