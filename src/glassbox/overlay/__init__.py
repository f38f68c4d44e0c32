"""The overlay generator: next tokens proposed by a readable, memory-mapped token-link index, scored by a
Global Score Accumulator, chosen by a language model acting as a selector, every step traced, feedback stored.

Modules, one idea each:
  corpus       named offline corpora (KJV Bible, CPython's pydoc topics, Brown) and text files → documents;
               SPEC%N / SPEC%-N: every N-th document / the rest (held-out documents)
  index        build and memory-map the index: token array, CSR link tables (top-K), suffix array; on several
               corpora, each one's token range (meta "sources")
  ngram        the table distribution P_T read from the suffix array in bounded time
  session      the session memory P_S: a table of the text read or written so far
  gate         the table's gate features (match, count, concentration, sparse, LM max-prob, source shares)
  mixer        the LM, P_T and P_S in one softmax; its one out-of-fold fitter with the block bootstrap; oracle
  accumulator  the Global Score Accumulator: votes from links, repeat fatigue, triad bonus, pruning, top-N
  lm           load the selector LM (one small function, so the loader can change in one place)
  generate     the step loop: candidates → selector → emit; greedy, beam, sampling; stop rules
  store        SQLite (WAL) store of traces (append-only) and feedback
  explain      render a trace step for a person
  evaluate     the held-out benchmark behind `glassbox overlay eval` (the LM at its full context by default)
  timing       generation latency against the LM alone, lookup time as the index grows
  commands     the `glassbox overlay ...` sub-commands
"""
