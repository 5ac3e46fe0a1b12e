# vbproxy: build, demo, tests, fuzzing, benchmarks.
#
#   make demo   builds sample disks with real tools and shows what vbproxy finds
#   make test   installs what the tests need and runs them all
#
# Both can be run again: installs are skipped when everything is present.

SHELL := /bin/bash
CARGO ?= cargo
DEMO_DIR := target/demo
FUZZ_TARGETS := detect vmdk_sparse vmdk_descriptor vmdk_cowd vmdk_sesparse vhd vhdx qcow2 vmfs vmx iscsi_pdu
FUZZ_SECONDS ?= 60

# Debian packages the tests use as real tools and oracles: qemu-img/qemu-io
# (disk formats), libvhdi (VHD/VHDX differencing oracle), gdb (a VHDX with a
# dirty log), partitioning and LVM tools, filesystem makers and readers
# (e2fsprogs, dosfstools, mtools, ntfs-3g, sleuthkit, attr). A package
# already installed is never touched, so a newer qemu-utils stays.
# The SAN in tests is tgtd (tgt) with libiscsi's tools as the oracle; VMFS
# is checked against vmfs-tools/vmfs6-tools; backup targets are GNU tar,
# restic and borg.
APT_PACKAGES := qemu-utils time python3 libvhdi-utils python3-libvhdi fuse3 gdb \
	fdisk gdisk lvm2 util-linux e2fsprogs dosfstools mtools ntfs-3g attr sleuthkit gzip xxd \
	tgt libiscsi-bin sg3-utils vmfs-tools vmfs6-tools restic borgbackup tar \
	busybox-static cpio binutils
# busybox-static, cpio and binutils (strip) build the appliance initramfs;
# qemu-system-x86 boots it, installed by appliance/install-qemu.sh, which
# matches it to the installed qemu-utils (Debian 12's own 7.2 would
# conflict with, or downgrade, a backported qemu-utils).

.PHONY: all build deps demo test fuzz fuzz-seeds fuzz-tools bench clean-fixtures appliance

all: build

build:
	$(CARGO) build --release --workspace

deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing test tools:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -q && apt-get install -y -q --no-install-recommends qemu-utils $$missing; \
	fi
	@bash appliance/install-qemu.sh
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install the Rust toolchain (rustup) first" >&2; exit 1; }

demo: deps build
	@bash tests/demo.sh $(DEMO_DIR)

test: deps
	$(CARGO) build --workspace
	$(CARGO) test --workspace

fuzz-tools:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked

# Small seed images for every fuzz target, made by qemu-img.
fuzz-seeds: deps
	@bash fuzz/make-seeds.sh fuzz/corpus

# Runs every fuzz target for FUZZ_SECONDS (cargo fuzz needs nightly
# features; RUSTC_BOOTSTRAP lets the stable toolchain provide them).
fuzz: fuzz-tools fuzz-seeds
	@set -e; for t in $(FUZZ_TARGETS); do \
	  echo "== fuzz $$t ($(FUZZ_SECONDS)s)"; \
	  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run $$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=1024 -timeout=5 2>&1 | tail -3); \
	done

clean-fixtures:
	rm -rf target/fixtures target/scratch target/demo

# The appliance kernel + initramfs in target/appliance (appliance/README.md);
# boot it with appliance/run-qemu.sh IMAGE[:LUN]...
appliance: deps
	$(CARGO) build --release -p vbproxy
	bash appliance/build.sh

# Times vbproxy against qemu-img, ntfs-3g + tar and kernel + tar on the same
# inputs (cached in target/bench) and rewrites docs/PERFORMANCE.md. Needs
# root; takes about 15 minutes (BENCH_ARGS=--small for a quick check).
bench: deps build
	python3 bench/bench.py $(BENCH_ARGS)
