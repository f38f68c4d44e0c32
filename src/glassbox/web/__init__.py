"""See it: `glassbox serve` (a local web app) and the data both it and `glassbox report` show.

paths.py decides which files a request may open; data.py turns a checkpoint or a training run into the
JSON documents the views draw (anatomy, atlas, patterns, one head, timeline), cached on disk; jobs.py runs
heavy work off the event loop with progress; server.py is the FastAPI app; static/ holds the hand-written
page (app.js, app.css) that the server serves and the report inlines.
"""
