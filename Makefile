# Two commands do everything on a fresh machine: `make book` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PROFILE ?= default
# `make book FORCE=1` re-executes every notebook; by default only those whose inputs changed run
FORCE ?=
# the peer of the repaired randomization tests (sMPRT, eMPRT): a test-only dependency, see install
QUANTUS := quantus==0.6.0
export SALIENCY_SANITY_CACHE ?= $(CURDIR)/.cache
# pip on this kind of machine prints one warning per missing local index entry; keep logs readable
PIP_QUIET := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: all install data browser book test test-fast smoke bench headline clean distclean

all: book

# Quantus (the repaired randomization tests are tested against it) is installed without its declared
# opencv-python: grad-cam's opencv-python-headless already provides cv2, and two OpenCV wheels
# writing one cv2/ folder break each other. Its other requirements are in [all] already.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip $(PIP_QUIET)
	$(PY) -m pip install -q -e ".[all]" $(PIP_QUIET)
	$(PY) -m pip install -q --no-deps "$(QUANTUS)" cachetools $(PIP_QUIET)
	$(PY) -c "import saliency_sanity, torch, torchvision, papermill, captum, zennit, pytorch_grad_cam, quantus"
	touch $@

install: $(VENV)/.installed

# Fashion-MNIST: Debian's package when we are root with apt, otherwise torchvision downloads it.
data: install
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && [ -z "$$FASHION_MNIST_DIR" ] \
	    && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) \
	    || echo "apt could not install dataset-fashion-mnist; falling back to torchvision's download"; \
	fi
	$(PY) -c "from saliency_sanity.data import find_fashion_mnist; print('Fashion-MNIST:', find_fashion_mnist())"

book: data
	$(PY) -m saliency_sanity reproduce --profile $(PROFILE)$(if $(filter 1 yes true,$(FORCE)), --force)
	@echo "The book is at book/_build/html/index.html"

smoke: data
	$(PY) -m saliency_sanity reproduce --profile smoke

# Debian's chromium for the browser test of the built site. Installed with apt when we are root;
# anything else that leaves it missing stops here, loudly: `make test` never skips the browser
# test (`make test-fast` leaves it out on purpose).
browser: install
	@if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then \
	  if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	    echo "make browser: Debian's chromium is missing and only root with apt-get can install it here;" >&2; \
	    echo "  run 'sudo apt-get install chromium' (or 'sudo make browser'), or 'make test-fast' to leave out the browser test" >&2; \
	    exit 1; \
	  fi; \
	  echo "Installing Debian's chromium for the browser test (apt-get install chromium)"; \
	  apt-get install -y -qq chromium >/dev/null 2>&1 \
	    || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
	    || { echo "make browser: apt-get could not install chromium (see the errors above)" >&2; exit 1; }; \
	  command -v chromium >/dev/null \
	    || { echo "make browser: apt-get installed chromium but it is not on PATH" >&2; exit 1; }; \
	fi
	@$(PY) -c "import playwright.sync_api" \
	  || { echo "make browser: playwright is not importable in $(VENV); run 'make install'" >&2; exit 1; }

# --durations: every CI log lists the slowest tests, to keep make test within its ~15-minute budget
test: data browser
	$(PY) -m pytest -q --durations=25

test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) benchmarks/methods.py --model vgg --csv benchmarks/results/methods_vgg_cpu.csv
	$(PY) benchmarks/methods.py --model resnet --csv benchmarks/results/methods_resnet_cpu.csv
	$(PY) benchmarks/randomization.py --model vgg --cases plain --csv benchmarks/results/randomization_vgg_cpu.csv
	OMP_NUM_THREADS=1 $(PY) benchmarks/randomization.py --model vgg --n-images 32 --repeats 1 --cases smooth,efficient \
	  --csv benchmarks/results/randomization_repaired_vgg_cpu.csv
	$(PY) benchmarks/report.py

# the README's figure, from a book built with the default profile
headline:
	cp book/figures/positive_handling_summary.png docs/headline.png

clean:
	rm -rf book/_build book/generated

distclean: clean
	rm -rf $(VENV) .cache
