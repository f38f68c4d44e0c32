"""The overlay generator: next tokens proposed by a readable, memory-mapped token-link index, scored by a
Global Score Accumulator, chosen by a language model acting as a selector, every step traced, feedback stored.

Modules, one idea each:
  corpus       named offline corpora (KJV Bible, CPython's pydoc topics) and text files → documents
  index        build and memory-map the index: token array, CSR link tables (top-K), suffix array
  accumulator  the Global Score Accumulator: votes from links, repeat fatigue, triad bonus, pruning, top-N
  lm           load the selector LM (one small function, so the loader can change in one place)
  generate     the step loop: candidates → selector → emit; greedy, beam, sampling; stop rules
  store        SQLite (WAL) store of traces (append-only) and feedback
  explain      render a trace step for a person
  evaluate     the held-out benchmark behind `glassbox overlay eval`
  commands     the `glassbox overlay ...` sub-commands
"""
