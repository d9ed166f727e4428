# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test

.PHONY: run test lint install clean bench contracts

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(TSTAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/drbroker serve

lint: $(TSTAMP)
	$(BIN)/ruff check broker tests bench

test: $(TSTAMP)
	$(BIN)/ruff check broker tests bench
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# IBM's API shapes (broker/fakecloud/contracts/*.json) from git checkouts of IBM's SDKs at the pinned commits:
#   make contracts POWER_GO_CLIENT=../power-go-client KEYPROTECT_GO_CLIENT=../keyprotect-go-client
contracts: $(STAMP)
	$(BIN)/python -m broker.fakecloud.contracts.generate --power-go-client $(POWER_GO_CLIENT) \
		--keyprotect-go-client $(KEYPROTECT_GO_CLIENT)

bench: $(TSTAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .drbroker
