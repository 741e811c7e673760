# helix-ops: one Makefile for the set-up commands the README gives.
#   make test        installs what is missing, builds the images, brings the bed up (from the fixtures), runs pytest
#   make quickstart  the local quickstart (see README)
#   make bed-up / make bed-down   the test bed by hand
#   make kube        builds the local Kubernetes control plane (Go modules; once per machine, see testbed/kube)
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# iptables: netavark (podman's network backend) runs it for every container on a network; Debian lists it only as a
# suggestion, and without it a container's start fails with "netavark: No such file or directory"
APT_PACKAGES := podman runc redis-server nginx-light busybox-static uidmap slirp4netns fuse-overlayfs aardvark-dns netavark iptables
MAVEN_STAMP := testbed/maven/target/.stamp
PYTEST_ARGS ?=

.PHONY: deps apt venv maven images kube kube-background test bed-up bed-down down quickstart clean

deps: apt venv maven

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.stamp: pyproject.toml
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install -q uv
	@test -x $(PY) || python3 -m uv venv -q --python python3 $(VENV)
	python3 -m uv pip install -q --python $(PY) -e '.[test]'
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

kube-background:
	@bash testbed/kube/build.sh --background

test: kube-background deps
	$(PY) -m pytest $(PYTEST_ARGS)

bed-up: deps
	$(PY) -m testbed up

down bed-down:
	$(PY) -m testbed down

clean: bed-down
	rm -rf testbed/maven/target .testbed

quickstart: deps
	$(PY) -m testbed.quickstart
