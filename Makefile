# celebalib: `make demo` runs the course end to end; `make test` runs every test.
# Both create .venv and install the package into it on first use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-test
TEST_HOME := build/test-home
# With CELEBA_ROOT set, `make test` also runs the notebooks on those genuine files (fast mode).
REAL_TEST_HOME := build/test-home-celeba

.DEFAULT_GOAL := help
.PHONY: help setup browser demo app test test-fast lab check bench celeba-root celeba-cpu release-run release-model clean

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

# One stamp per extra: a target installs only what it needs (the test extra includes course and app).
$(VENV)/.installed-%: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[$*]"
	@touch $@

$(VENV)/.installed-lib: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e .
	@touch $@

setup: $(STAMP) ## Create .venv and install celebalib with its course, app and test tools.

browser: ## Install Debian's Chromium for the browser test where possible.
	@bash scripts/install-browser.sh

demo: $(VENV)/.installed-course ## Generate the synthetic faces, run notebooks 01-05, write reports/.
	$(PY) -m celebalib demo

app: $(VENV)/.installed-app ## Serve the retrieval explorer over the demo's run (RUN=runs/NAME, PORT=8866).
	$(PY) -m celebalib app $(if $(RUN),--run $(RUN)) --port $(or $(PORT),8866)

test: setup browser ## Run the unit tests, the browser test and the notebooks (fast mode; also on CELEBA_ROOT when set).
	rm -rf $(TEST_HOME) && mkdir -p $(TEST_HOME)
	CELEBA_ROOT= CELEBALIB_TEST_CELEBA=$(if $(CELEBA_ROOT),$(abspath $(CELEBA_ROOT))) \
	  CELEBALIB_FAST=1 CELEBALIB_HOME=$(abspath $(TEST_HOME)) $(PY) -m pytest -q -p no:cacheprovider tests notebooks --nbval-lax
	@if [ -n "$(CELEBA_ROOT)" ]; then \
	  echo "Notebooks on the genuine CelebA files in $(CELEBA_ROOT) (fast mode):"; \
	  rm -rf $(REAL_TEST_HOME) && mkdir -p $(REAL_TEST_HOME) && \
	  CELEBA_ROOT="$(abspath $(CELEBA_ROOT))" CELEBALIB_FAST=1 CELEBALIB_HOME=$(abspath $(REAL_TEST_HOME)) \
	    $(PY) -m pytest -q -p no:cacheprovider notebooks --nbval-lax; \
	else \
	  echo "Notebooks on real CelebA skipped: set CELEBA_ROOT=/path/to/celeba to run them too."; \
	fi

test-fast: setup ## Run the unit tests only (no notebooks).
	CELEBA_ROOT= CELEBALIB_TEST_CELEBA=$(if $(CELEBA_ROOT),$(abspath $(CELEBA_ROOT))) CELEBALIB_FAST=1 $(PY) -m pytest -q -p no:cacheprovider tests

lab: $(VENV)/.installed-course ## Open JupyterLab on the notebooks.
	$(PY) -m jupyter lab notebooks

check: $(VENV)/.installed-lib ## Validate the dataset in use (CELEBA_ROOT, else the synthetic set, generated if missing).
	$(PY) -m celebalib check

# The other benchmark scripts (bench_celeba_cpu, bench_tta, bench_weight_averaging) score trained
# run folders, which they take as arguments; label_agreement reads a real CelebA root's labels.
STANDALONE_BENCHMARKS := bench_data bench_fast_layers bench_metrics bench_retrieval bench_synthetic bench_training bench_xla profile_step

bench: setup ## Run the benchmark scripts that need no trained run and print their figures.
	@for name in $(STANDALONE_BENCHMARKS); do echo "== benchmarks/$$name.py"; $(PY) benchmarks/$$name.py || exit 1; done

celeba-root:
	@test -n "$(CELEBA_ROOT)" || { echo "make: this target needs real CelebA: set CELEBA_ROOT, e.g. make celeba-cpu CELEBA_ROOT=/path/to/celeba" >&2; exit 2; }

celeba-cpu: celeba-root setup ## Train (or resume) and evaluate the CPU recipe on real CelebA (needs CELEBA_ROOT=/path/to/celeba).
	@if [ -f runs/celeba-cpu/model.keras ]; then echo "runs/celeba-cpu is trained already: evaluating it."; else \
	  $(PY) -m celebalib train --data "$(CELEBA_ROOT)" --recipe celeba-cpu --out runs/celeba-cpu; fi
	$(PY) -m celebalib evaluate --run runs/celeba-cpu --data "$(CELEBA_ROOT)" --split val --objective accuracy --quiet
	$(PY) -m celebalib evaluate --run runs/celeba-cpu --data "$(CELEBA_ROOT)" --split val --quiet

# A release is one run's files, ready to attach: its bundle, its ONNX model, its model card and their
# checksums. They are written into build/release.tmp and moved to build/release only when all exist.
RELEASE_NAME = $(notdir $(abspath $(RUN)))
SHA256 := $(shell command -v sha256sum >/dev/null 2>&1 && echo sha256sum || echo "shasum -a 256")

release-run:
	@test -n "$(RUN)" || { echo "make: release-model needs a trained run folder: make release-model RUN=runs/celeba-cpu" >&2; exit 2; }
	@test -d "$(RUN)" || { echo "make: $(RUN): run folder not found; expected a trained run, e.g. RUN=runs/celeba-cpu" >&2; exit 2; }
	@test -f "$(RUN)/eval_val.json" || { echo "make: $(RUN): not evaluated, so its model card would have no figures; first: python -m celebalib evaluate --run $(RUN) --data \"\$$CELEBA_ROOT\" --split val" >&2; exit 2; }

release-model: release-run $(VENV)/.installed-export ## Write RUN's bundle, ONNX model, model card and SHA256SUMS into build/release/ (RUN=runs/NAME).
	rm -rf build/release.tmp && mkdir -p build/release.tmp
	$(PY) -m celebalib export --run "$(RUN)" --out "build/release.tmp/$(RELEASE_NAME).zip"
	$(PY) -m celebalib export --run "$(RUN)" --out "build/release.tmp/$(RELEASE_NAME).onnx"
	$(PY) -m celebalib card --run "$(RUN)" --out build/release.tmp/MODEL_CARD.md
	cd build/release.tmp && $(SHA256) "$(RELEASE_NAME).zip" "$(RELEASE_NAME).onnx" MODEL_CARD.md > SHA256SUMS
	rm -rf build/release && mv build/release.tmp build/release
	@echo "build/release/ holds the release of $(RUN):" && cat build/release/SHA256SUMS

clean: ## Remove build output (keeps .venv, data/ and runs/).
	rm -rf build reports .pytest_cache
