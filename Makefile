# The two set-up commands of the README:
#   make run    the main job: a real local run on the embedded default
#   make test   lint, type check and the whole test suite
# Each creates .venv if missing and installs what it needs (Debian rendering libraries when apt
# is available and we are root, torch==2.13.0 first, then wm_ray with its extras).

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= atari,dmc,mujoco,brax,robotics,unity,dev
comma := ,
APT_PACKAGES := libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 docker-compose
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml 2>/dev/null | cksum | cut -d' ' -f1)-$(subst $(comma),_,$(EXTRAS))

# MuJoCo / dm_control render offscreen through EGL (Mesa's software renderer without a GPU).
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= $(MUJOCO_GL)
export RAY_USAGE_STATS_ENABLED ?= 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

RUN_ARGS ?=

.PHONY: all setup system-deps run test lint format typecheck bench clean \
	compose-config compose-up compose-down compose-submit e2e-docker

all: test

setup: $(STAMP)

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian packages:$$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing) >/dev/null \
	    || echo "warning: apt-get failed; image rendering (dm_control pixels) may not work"; \
	else \
	  echo "note: missing$$missing (need root + apt); dm_control pixel rendering may not work"; \
	fi

$(STAMP): pyproject.toml | system-deps
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	@rm -f $(VENV)/.installed-*; touch $@

run: $(STAMP)
	$(VENV)/bin/wm-ray train $(RUN_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff format --check wm_ray tests benchmarks
	$(VENV)/bin/ruff check wm_ray tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format wm_ray tests benchmarks
	$(VENV)/bin/ruff check --fix wm_ray tests benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# Two pytest workers, one test file each at a time (a module's fixtures stay in one process; each
# worker has its own local Ray cluster). TEST_WORKERS=0 runs the suite in this one process.
TEST_WORKERS ?= 2

test: lint typecheck
	$(PY) -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)

# Wall-clock budget of each system's CartPole learning run in the RLlib peer benchmark.
PEER_BUDGET_MINUTES ?= 15

# The steps are listed in benchmarks/suite.py (also run by `wm-ray bench`).
bench: $(STAMP)
	$(PY) -m benchmarks.suite --peer-budget-minutes $(PEER_BUDGET_MINUTES)

# docker-compose cluster (docker/compose.yaml): compose v2 plugin if present, else Debian's v1.
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
COMPOSE_FILE := docker/compose.yaml -p wm-ray
TOKEN := docker/secrets/ray_token
WORKERS ?= 2
RUN ?= job-$(shell date +%Y%m%d-%H%M%S)
ARGS ?= --configs debug --steps 2000

# The Ray token: 32 random bytes, created once, readable by the containers' user (the folder
# keeps it from other users of the host); never part of the image (.dockerignore).
$(TOKEN):
	@mkdir -p $(dir $@) && chmod 700 $(dir $@)
	@python3 -c "import secrets; print(secrets.token_hex(32))" > $@ && chmod 644 $@
	@echo "wrote a new Ray auth token to $@"

compose-config: $(TOKEN)
	$(COMPOSE) -f $(COMPOSE_FILE) config -q

compose-up: $(TOKEN)
	$(COMPOSE) -f $(COMPOSE_FILE) up -d --build --scale ray-worker=$(WORKERS)

compose-down:
	$(COMPOSE) -f $(COMPOSE_FILE) down

compose-submit: $(STAMP) $(TOKEN)
	RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$(TOKEN) $(VENV)/bin/ray job submit \
	  --address http://127.0.0.1:$${WM_RAY_DASHBOARD_PORT:-8265} -- \
	  wm-ray train --address auto --run-dir /runs/$(RUN) $(ARGS)

# End to end (needs a Docker daemon, or root to start one): build the image, bring up the compose
# cluster with 2 workers, submit a short training job with the token, check the run dir, tear
# down. Builds its own base image with debootstrap when no registry is reachable (docker/e2e.sh).
e2e-docker: $(STAMP)
	bash docker/e2e.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
