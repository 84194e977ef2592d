# efa-guard: `make demo` shows it working in a throw-away sandbox, `make test` runs every test.
# Both install what they need (Debian packages, a virtualenv) and must run as root.

PYTHON      ?= /usr/bin/python3
VENV        ?= .venv
VENV_OLD    ?= .venv-bookworm
APT_PACKAGES = iptables iproute2 nmap python3-venv systemd systemd-container debootstrap util-linux \
               nftables prometheus prometheus-node-exporter systemd-journal-remote \
               libmonitoring-plugin-perl sudo
# Debian bookworm's versions of our dependencies: the oldest generation we support.
BOOKWORM_PINS = pyroute2==0.7.2 structlog==22.3.0 tenacity==8.2.1 watchdog==2.2.1 \
                prometheus-client==0.16.0

.PHONY: all deps demo test test-unit test-bookworm lint typecheck bench deb lintian clean

all: test

# $(call apt_ensure,PACKAGES): install the Debian packages that are missing. Services they
# ship (prometheus, node_exporter) are never started by the install (policy-rc.d) and are
# disabled again: the tests start their own, on loopback, and stop them.
define apt_ensure
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  rc=/usr/sbin/policy-rc.d; made=""; \
	  if [ ! -e $$rc ]; then printf '#!/bin/sh\nexit 101\n' > $$rc; chmod 755 $$rc; made=1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $$missing; status=$$?; \
	  if [ -n "$$made" ]; then rm -f $$rc; fi; \
	  for s in prometheus prometheus-node-exporter; do \
	    case " $$missing " in *" $$s "*) systemctl disable --quiet $$s.service 2>/dev/null || true;; esac; \
	  done; \
	  exit $$status; \
	fi
endef

$(VENV)/.installed: pyproject.toml
	$(call apt_ensure,$(APT_PACKAGES))
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	touch $@

$(VENV_OLD)/.installed: $(VENV)/.installed
	$(PYTHON) -m venv $(VENV_OLD)
	$(VENV_OLD)/bin/python -m pip install -q $(BOOKWORM_PINS) 'pytest>=7.2' 'hypothesis>=6.36'
	$(VENV_OLD)/bin/python -m pip install -q --no-deps -e .
	touch $@

deps: $(VENV)/.installed $(VENV_OLD)/.installed

BACKEND ?= nft
demo: $(VENV)/.installed
	$(VENV)/bin/python -m tools.demo --backend $(BACKEND)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check efa_guard tests tools
	$(VENV)/bin/ruff format --check efa_guard tests tools

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

# Lint, types, the package and lintian; the whole suite on the newest releases (with the
# system test of the installed .deb under systemd-nspawn), then again on bookworm's versions.
test: deps lint typecheck lintian
	$(VENV)/bin/python -m pytest
	$(VENV_OLD)/bin/python -m pytest -p no:cacheprovider -m "not system"

test-unit: $(VENV)/.installed
	$(VENV)/bin/python -m pytest tests/unit

# Each benchmark prints its figures, the goal and a met/MISSED mark; a miss does not stop the
# others (make -k style): the exit status is the number of benchmarks that missed.
BENCHES = tools.bench tools.bench_daemon tools.bench_fight tools.bench_exposure \
          tools.bench_config tools.bench_journal tools.bench_metrics tools.bench_goals
bench: $(VENV)/.installed
	@missed=0; for b in $(BENCHES); do \
	  echo "== $$b"; $(VENV)/bin/python -m $$b || missed=$$((missed + 1)); \
	done; echo "== benchmarks that missed a goal: $$missed"; exit $$missed

# The Debian package, built from the tracked files in a scratch directory outside the tree;
# only dist/efa-guard_<version>_all.deb is left here.
DEB_BUILD_PACKAGES = debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools dpkg-dev lintian git
DEB_SCRATCH ?= /tmp/efa-guard-deb
deb:
	$(call apt_ensure,$(DEB_BUILD_PACKAGES))
	rm -rf $(DEB_SCRATCH) && mkdir -p $(DEB_SCRATCH)/efa-guard
	git ls-files -z | xargs -0 cp --parents -t $(DEB_SCRATCH)/efa-guard
	cp -r packaging/debian $(DEB_SCRATCH)/efa-guard/debian
	# Debian's own python3, whatever else is first on PATH
	cd $(DEB_SCRATCH)/efa-guard && PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b
	mkdir -p dist && rm -f dist/efa-guard_*_all.deb && cp $(DEB_SCRATCH)/efa-guard_*_all.deb dist/
	rm -rf $(DEB_SCRATCH)
	@ls dist/efa-guard_*_all.deb

lintian: deb
	lintian --fail-on error,warning --display-info dist/efa-guard_*_all.deb

clean:
	rm -rf $(VENV) $(VENV_OLD) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
