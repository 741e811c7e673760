# helix-ops: one Makefile for the set-up commands the README gives.
#   make check       lint (ruff), import contracts, and every test that needs no server (HELIX_TIER=check: a
#                    test that reaches a server fails there), on both cores; under a minute
#   make test        installs what is missing, builds the images, brings the bed up (from the fixtures), runs pytest
#                    (the real Kubernetes node's tests in a second session beside it; `make test-node`: only them)
#   make quickstart  the local quickstart (see README): the Prefect UI on http://127.0.0.1:4200 (HELIX_UI_PORT), Helix on :8080
#   make down        stops the quickstart and every `make bed-up` run (not the test beds of running pytest sessions)
#   make bed-up / make bed-down   the test bed by hand
#   make kube        builds the local Kubernetes control plane (Go modules; once per machine, see testbed/kube)
#   make kube-node   builds it and starts one real node on it (kubelet, containerd, kube-proxy, CoreDNS), the bed's
#                    images loaded; `make bed-down` stops it (python -m testbed status prints its kubeconfig)
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# iptables: netavark (podman's network backend) runs it for every container on a network; Debian lists it only as a
# suggestion, and without it a container's start fails with "netavark: No such file or directory"
# chromium: the browser tests (tests/ui) drive it through playwright (executable_path=/usr/bin/chromium)
# containerd, containernetworking-plugins: the real Kubernetes node (testbed/kube_node.py) runs its pods with them;
# libc6-dev: its pause image is a static C program (testbed/images/pause)
# ipset: kube-router, the real node's NetworkPolicy firewall, keeps its policies' address sets in it
# conntrack: the real node's load tests delete the untranslated entries their waits left (testbed/kube_node.py,
# forget_untranslated)
APT_PACKAGES := podman runc redis-server nginx-light busybox-static uidmap slirp4netns fuse-overlayfs aardvark-dns netavark iptables chromium haproxy containerd containernetworking-plugins libc6-dev conntrack ipset
MAVEN_STAMP := testbed/maven/target/.stamp
PYTEST_ARGS ?=

.PHONY: check deps apt venv maven images kube kube-node kube-background test test-node bed-up bed-down down quickstart clean

deps: apt venv maven

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# the dependencies are the ones uv.lock pins (the tested set); `uv lock` after changing pyproject.toml
$(VENV)/.stamp: pyproject.toml uv.lock
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install -q uv
	python3 -m uv sync -q --frozen --extra test --python python3
	@touch $@

venv: $(VENV)/.stamp

$(MAVEN_STAMP): testbed/maven/pom.xml
	mvn -B -q -f testbed/maven/pom.xml package
	@touch $@

maven: $(MAVEN_STAMP)

images: deps
	$(PY) -m testbed build-images

# The Kubernetes build (tens of minutes fresh, seconds warm) starts first, in the background at nice 19, so it
# overlaps the rest of `make test`; the tests that use it run last and wait for it (tests/conftest.py).
kube:
	bash testbed/kube/build.sh

kube-node: kube deps
	$(PY) -m testbed up kube-node

kube-background:
	@bash testbed/kube/build.sh --background

check: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	HELIX_TIER=check $(PY) -m pytest -q -p no:cacheprovider -m "not bed" -n 2 $(PYTEST_ARGS)

# The real Kubernetes node's tests (-m real_node, tests/kube/test_real_node.py) spend most of their time waiting
# on readiness probes: `make test` runs them beside the rest, in a pytest session (and test bed) of their own, and
# fails when either fails. Their output goes to .testbed/test-node.log and its tail is printed at the end.
# A test marked `unsettled` (fails now and then, cause not found; its docstring says what is seen) is left out
# of `make test`; `make test-node` runs every real-node test.
NODE_LOG := .testbed/test-node.log
# The data tests (backup, restore, rotation, the bed's own tests: about half of the rest's time, mostly waiting on
# Neo4j, Podman and Prefect) run in a third session beside the others, with their own bed: CI's budget is 60 min
# and one session took 57 min. Their output goes to .testbed/test-data.log, printed whole at the end.
DATA_TESTS := tests/backup tests/rotate tests/testbed tests/drivers tests/blocks tests/notifications tests/history
DATA_LOG := .testbed/test-data.log
NODE_PYTEST_ARGS ?= -q -p no:cacheprovider --durations=10

test: kube-background deps
	@mkdir -p .testbed; \
	$(PY) -m pytest -m "real_node and not unsettled" $(NODE_PYTEST_ARGS) > $(NODE_LOG) 2>&1 & node=$$!; \
	$(PY) -m pytest -m "not real_node" $(DATA_TESTS) $(PYTEST_ARGS) > $(DATA_LOG) 2>&1 & data=$$!; \
	$(PY) -m pytest -m "not real_node" $(addprefix --ignore=,$(DATA_TESTS)) $(PYTEST_ARGS); rc=$$?; \
	wait $$data; data_rc=$$?; wait $$node; node_rc=$$?; \
	echo "--- the data tests ($(DATA_TESTS), beside the rest; exit $$data_rc; log $(DATA_LOG)) ---"; \
	cat $(DATA_LOG); \
	echo "--- the real node's tests (pytest -m 'real_node and not unsettled', beside the rest; exit $$node_rc; log $(NODE_LOG)) ---"; \
	grep -vE '^[IWE][0-9]{4} ' $(NODE_LOG) | tail -n 60; \
	for r in $$rc $$data_rc $$node_rc; do if [ $$r -ne 0 ]; then exit $$r; fi; done

# only the real node's tests (see test)
test-node: kube-background deps
	$(PY) -m pytest -m real_node $(NODE_PYTEST_ARGS)

bed-up: deps
	$(PY) -m testbed up

down bed-down:
	$(PY) -m testbed down

clean: bed-down
	rm -rf testbed/maven/target .testbed

quickstart: deps
	$(PY) -m testbed.quickstart
