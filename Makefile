# bms-gateway: every developer and CI entry point. `make test` is what CI runs.
#
# Debian packages the tests need are installed here when missing (we are root
# on Debian bookworm in CI); nothing else is installed by hand.

CARGO ?= cargo
SYSTEM_PACKAGES := mosquitto mosquitto-clients openssl python3 python3-jinja2 can-utils qemu-system-x86 linux-image-amd64 busybox-static lintian dpkg-dev systemd udev chromium prometheus valgrind
export CARGO_TERM_COLOR ?= never

.PHONY: all build release test test-unit test-system test-deb demo bench bench-cost bench-system lint fmt fuzz run-vcan deb deps clean

all: build

build:
	$(CARGO) build --release

release: build

## Debian packages needed by the tests, installed only when missing.
deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

## Every test: unit, property and integration tests (in-process bus, real
## Mosquitto), the system tests on real SocketCAN in a VM, and the Debian
## package tests, overlapped where they wait (tests/make-test.sh: the system
## VM starts as soon as the release build exists, the package tests once the
## test build is done); a table of the tiers' times at the end.
test: deps
	CARGO=$(CARGO) bash tests/make-test.sh

test-unit:
	$(CARGO) test --all-targets

test-system: deps build
	bash tests/system/run.sh

test-deb: deps
	bash packaging/test-deb.sh

demo:
	$(CARGO) run --release --quiet -- demo

run-vcan: build
	bash etc/run-vcan.sh

deb:
	bash packaging/build-deb.sh

bench: build
	bash benches/run.sh

## Instructions per input frame and per idle second (valgrind's callgrind:
## counts that do not depend on the machine's load).
bench-cost: deps
	bash benches/frame_cost.sh

bench-system: deps build
	$(CARGO) build --release --example gateway_bench --example receive_floor
	BENCH=1 bash tests/system/run.sh bench

fuzz:
	bash fuzz/run.sh

## The fuzz targets are compiled (not run) too, so they cannot rot unseen.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) check --quiet --manifest-path fuzz/Cargo.toml --bins

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
