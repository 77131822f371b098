# One entry point for the project's tasks. Every target installs what it needs first.
VENV := .venv/bin
PYTEST_ARGS ?=

.PHONY: bootstrap test lint typecheck crds unit cluster engines bench demo

## The main job: one real voice turn on this machine with the bundled models.
demo:
	scripts/bootstrap.sh python
	$(VENV)/voice-demo

bootstrap:
	scripts/bootstrap.sh

## The whole test suite: lint, types, CRD drift, then every tier of pytest.
test: bootstrap lint typecheck
	$(VENV)/pytest $(PYTEST_ARGS)

lint:
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .

typecheck:
	$(VENV)/mypy

crds:
	$(VENV)/voice-crdgen
	$(VENV)/python -m voice_operator.api.docgen

unit cluster engines: bootstrap
	$(VENV)/pytest -m $@ $(PYTEST_ARGS)

bench: bootstrap
	for b in benchmarks/*.py; do case $$b in benchmarks/_*) ;; *) $(VENV)/python $$b || exit 1;; esac; done
