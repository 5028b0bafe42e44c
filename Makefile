# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv at the repo root on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
WORLD_DIR ?= world
APT_WORLD := openclipart-png fonts-liberation fonts-freefont-ttf fonts-dejavu-core

.PHONY: demo test browser fonts world train venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[words,web,distributed,parquet,test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP) fonts

# Rastered-word probing (the demo's words stage, `neuronscope words`, their tests) draws in DejaVu Sans.
# Installed here when missing and we may (root with apt-get); otherwise those commands stop with the same
# advice before they start.
APT_FONTS := fonts-dejavu-core

fonts:
	@dpkg -s $(APT_FONTS) >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    apt-get update -qq && apt-get install -y -qq $(APT_FONTS); } || \
	  echo "no $(APT_FONTS) and no root apt-get to install it: install it, or words and the demo stop at once"

# The microscope's browser tests drive Debian's Chromium; installed here when missing and we may
# (root with apt-get), never downloaded otherwise. Without it those tests skip and say why.
APT_BROWSER := chromium chromium-driver

browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    apt-get update -qq && apt-get install -y -qq $(APT_BROWSER); } || \
	  echo "no chromium/chromedriver and no root apt-get to install them: browser tests will skip"

test: $(STAMP) fonts browser
	$(PY) -m pytest -q -x --durations=15

demo: $(STAMP) fonts
	$(VENV)/bin/neuronscope demo

# Rebuild the mini CLIP's world from Debian's openclipart (only the world
# builder and trainer need these packages; tests and the demo do not).
world: $(STAMP)
	@dpkg -s $(APT_WORLD) >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    apt-get update -qq && apt-get install -y -qq $(APT_WORLD); } || \
	  echo "no $(APT_WORLD) and no root apt-get to install them: world build stops and names what is missing"
	$(VENV)/bin/neuronscope world build --out $(WORLD_DIR)

# Retrain the bundled mini CLIP (about 80 minutes on 2 cores), ship its
# weights and test split, and rewrite its card's JSON. The card is written beside, then moved: a failed
# eval must not leave the shipped card truncated (the shell's `>` empties it before eval starts).
MINI_CLIP_DIR := src/neuronscope/data/mini_clip
CARD := $(MINI_CLIP_DIR)/mini_clip_card.json
train: world
	$(VENV)/bin/neuronscope world train --world $(WORLD_DIR) --out runs/mini-clip --export $(MINI_CLIP_DIR)
	cp $(WORLD_DIR)/test_split.tar $(MINI_CLIP_DIR)/test_split.tar
	$(VENV)/bin/neuronscope world eval --world $(WORLD_DIR) --json --card-images docs/img > $(CARD).tmp
	mv $(CARD).tmp $(CARD)
