# hybridnets_ros developer entry points. Everything runs inside .venv, which `make setup` builds from a clean clone:
# torch (CPU), the PyPI ROS 2 wheels, the project's extras, vision_msgs bindings generated from msg/ when no
# vision_msgs is importable, and the project itself (non-editable, so data_files land under the venv prefix exactly
# as for users). Each step leaves a stamp in .venv/.stamps and re-runs only when its inputs change.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VENV_ABS := $(abspath $(VENV))
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMPS := $(VENV)/.stamps
TORCH_VERSION := 2.13.0
EXTRAS := onnx,openvino,train,test,ros-pip

VISION_MSGS_SRC := msg/vision_msgs
VISION_MSGS_WHEELS := $(VENV)/wheels
VISION_MSGS_INPUTS := $(shell find $(VISION_MSGS_SRC) -type f 2>/dev/null)
TF2_MSGS_SRC := msg/tf2_msgs
TF2_MSGS_WHEELS := $(VENV)/wheels-tf2
TF2_MSGS_INPUTS := $(shell find $(TF2_MSGS_SRC) -type f 2>/dev/null)

# Directories are listed too, so that adding or deleting a file also triggers a reinstall.
PROJECT_INPUTS := setup.py setup.cfg package.xml resource/hybridnets_ros resource/hybridnets_node \
	$(shell find hybridnets_ros launch config models -name __pycache__ -prune -o \( -type f -o -type d \) -print 2>/dev/null)

TESTS ?= test
PYTEST_ARGS ?=

# ROS processes started from here: DDS stays on this host, a domain of their own, the venv as the ament prefix.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export RMW_IMPLEMENTATION ?= rmw_fastrtps_cpp
export AMENT_PREFIX_PATH := $(VENV_ABS)$(if $(AMENT_PREFIX_PATH),:$(AMENT_PREFIX_PATH))
ifndef ROS_DOMAIN_ID
export ROS_DOMAIN_ID := $(shell shuf -i 1-100 -n 1)
endif
export PATH := $(VENV_ABS)/bin:$(PATH)
export VIRTUAL_ENV := $(VENV_ABS)

.PHONY: help setup install test demo bench clean distclean

help:
	@echo "make setup      create/update .venv (torch $(TORCH_VERSION) CPU, ROS 2 wheels, vision_msgs, tf2_msgs, this package)"
	@echo "make install    reinstall this package into .venv if its sources changed (part of setup)"
	@echo "make test       setup + pytest; TESTS='test/test_x.py' PYTEST_ARGS='-k name' narrow it"
	@echo "make demo       setup + python -m hybridnets_ros.demo"
	@echo "make bench      setup + inference and node benchmarks"
	@echo "make clean      remove build products and caches (keeps .venv)"
	@echo "make distclean  clean + remove .venv"

setup: $(STAMPS)/install

install: $(STAMPS)/install

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel

# torch first, pinned: the local CPU build satisfies `torch>=2.1` below, so pip never pulls the CUDA stack.
$(STAMPS)/deps: setup.py | $(PY)
	@mkdir -p $(STAMPS)
	$(PIP) install "torch==$(TORCH_VERSION)"
	$(PIP) install --no-build-isolation ".[$(EXTRAS)]"
	@touch $@

# Generated only where vision_msgs is missing; a vision_msgs that did not come from msg/ (a ROS install) is left
# alone. The wheel (specific to this venv's Python and NumPy) is cached in .venv/wheels, rebuilt when msg/ changes.
$(STAMPS)/vision_msgs: $(VISION_MSGS_INPUTS) | $(STAMPS)/deps
	@if $(PY) -c "import vision_msgs.msg" 2>/dev/null && ! $(PIP) show --quiet ros-vision-msgs 2>/dev/null; then \
		echo "vision_msgs is provided by the environment: not building $(VISION_MSGS_SRC)"; \
	else \
		$(MAKE) --no-print-directory vision-msgs-wheel && \
		$(PIP) install --no-deps --force-reinstall $(VISION_MSGS_WHEELS)/ros_vision_msgs-*.whl && \
		$(PY) -c "from vision_msgs.msg import Detection2DArray, Detection3DArray, LabelInfo"; \
	fi
	@touch $@

.PHONY: vision-msgs-wheel
vision-msgs-wheel: $(VISION_MSGS_WHEELS)/.built

$(VISION_MSGS_WHEELS)/.built: $(VISION_MSGS_INPUTS) | $(PY)
	$(PIP) install --quiet $$($(PY) -c "import tomllib; print(' '.join(tomllib.load(open('$(VISION_MSGS_SRC)/pyproject.toml', 'rb'))['build-system']['requires']))")
	rm -rf $(VISION_MSGS_WHEELS) && mkdir -p $(VISION_MSGS_WHEELS)
	$(PIP) wheel --no-deps --no-build-isolation -w $(VISION_MSGS_WHEELS) ./$(VISION_MSGS_SRC)
	@touch $@

# tf2_msgs (TFMessage, read from /tf_static on a pip-only install) the same way, where no tf2_msgs is importable.
$(STAMPS)/tf2_msgs: $(TF2_MSGS_INPUTS) | $(STAMPS)/deps
	@if $(PY) -c "import tf2_msgs.msg" 2>/dev/null && ! $(PIP) show --quiet ros-tf2-msgs 2>/dev/null; then \
		echo "tf2_msgs is provided by the environment: not building $(TF2_MSGS_SRC)"; \
	else \
		$(MAKE) --no-print-directory $(TF2_MSGS_WHEELS)/.built && \
		$(PIP) install --no-deps --force-reinstall $(TF2_MSGS_WHEELS)/ros_tf2_msgs-*.whl && \
		$(PY) -c "from tf2_msgs.msg import TFMessage"; \
	fi
	@touch $@

$(TF2_MSGS_WHEELS)/.built: $(TF2_MSGS_INPUTS) | $(PY)
	$(PIP) install --quiet $$($(PY) -c "import tomllib; print(' '.join(tomllib.load(open('$(TF2_MSGS_SRC)/pyproject.toml', 'rb'))['build-system']['requires']))")
	rm -rf $(TF2_MSGS_WHEELS) && mkdir -p $(TF2_MSGS_WHEELS)
	$(PIP) wheel --no-deps --no-build-isolation -w $(TF2_MSGS_WHEELS) ./$(TF2_MSGS_SRC)
	@touch $@

# Non-editable on purpose: `pip install -e` skips data_files (share/, lib/hybridnets_ros/). setuptools builds in
# ./build/lib and never deletes from it, so it is cleared first to keep removed modules out of the install.
# flock: two make runs in one checkout (parallel shells) must not interleave the clear and the reinstall.
$(STAMPS)/install: $(STAMPS)/vision_msgs $(STAMPS)/tf2_msgs $(PROJECT_INPUTS)
	flock $(VENV)/.install.lock bash -c 'rm -rf build/lib build/bdist.* hybridnets_ros.egg-info && \
		$(PIP) install --quiet --no-deps --no-build-isolation --force-reinstall .'
	@touch $@

test: setup
	$(PY) -m pytest $(TESTS) $(PYTEST_ARGS)

demo: setup
	$(PY) -m hybridnets_ros.demo $(DEMO_ARGS)

# The BDD100K demo frames beside the repository when they are there, else the bench's synthetic scenes.
BENCH_IMAGES := $(wildcard ../shared/data/bdd_demo)
bench: setup
	$(PY) -m hybridnets_ros.inference.bench $(if $(BENCH_IMAGES),--images $(BENCH_IMAGES)) $(BENCH_ARGS)
	$(PY) -m hybridnets_ros.ros.bench

clean:
	rm -rf build install log hybridnets_ros.egg-info .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
