# The two set-up commands of the README: `make demo` and `make test`. Both work on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch is installed first so pip never pulls a multi-GB CUDA build here.
TORCH_PIN ?= torch==2.13.0
# The Python of SANDBOX_BASE (bookworm's is 3.11): uvloop, httptools and pydantic-core are
# compiled per version. Wheels of several versions can share sandbox/wheels.
SANDBOX_PYTHON ?= 3.11

.PHONY: demo test lint install clean sandbox-wheels sandbox-image trainer-image

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The whole pipeline on the tiny default with kfp.local, publishing to a loopback S3 server.
demo: $(VENV)/.installed
	$(PY) -m pipelines.demo

# The image every pipeline step runs in (`DULTRA_TRAINER_IMAGE` when compiling the pipeline).
TRAINER_IMAGE ?= ghcr.io/dultra/dultra-trainer:0.1.0
trainer-image:
	docker build -f docker/Dockerfile --build-arg GIT_COMMIT=$$(git rev-parse HEAD) -t $(TRAINER_IMAGE) .

# The sandbox's integration tests need a Docker engine and the offline image inputs;
# .ci/docker-setup.sh installs and starts one where none runs (root, Debian).
test: $(VENV)/.installed sandbox/wheels/.done-$(SANDBOX_PYTHON)
	bash .ci/docker-setup.sh
	$(VENV)/bin/ruff check --output-format concise dultra sandbox components pipelines tests benchmarks
	$(PY) -m pytest -q

# The sandbox image, built offline: wheels from PyPI on the host, base from `.ci/docker-setup.sh`.
SANDBOX_IMAGE ?= dultra-sandbox:latest
SANDBOX_BASE ?= local/debian-python:bookworm

sandbox/wheels/.done-$(SANDBOX_PYTHON): sandbox/requirements.txt $(VENV)/.installed
	$(PY) -m pip download -q -d sandbox/wheels --python-version $(SANDBOX_PYTHON) --only-binary=:all: \
		-r sandbox/requirements.txt pip
	touch $@

sandbox-wheels: sandbox/wheels/.done-$(SANDBOX_PYTHON)

sandbox-image: sandbox-wheels
	docker build -q --build-arg BASE=$(SANDBOX_BASE) -t $(SANDBOX_IMAGE) sandbox

clean:
	rm -rf $(VENV) .pytest_cache
