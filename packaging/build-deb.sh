#!/usr/bin/env bash
# Builds the bms-gateway Debian package with cargo-deb (`make deb`).
#
# Usage: bash packaging/build-deb.sh [cargo-deb options...]
#   e.g. --target aarch64-unknown-linux-gnu, --no-build, --deb-revision 2
# Prints the path of the .deb as the last line of stdout.
#
# What it does besides `cargo deb`:
#  * installs cargo-deb (`cargo install cargo-deb --locked`) when missing;
#  * stages the config template into target/deb-staging/bms_config.toml with
#    GATEWAY-ACTIVATED forced to false: the package must never ship a config
#    that drives inverters before the owner has edited it. The template is
#    etc/bms_config.toml, or $BMS_CONFIG_TEMPLATE if set;
#  * checks that Cargo.toml carries the [package.metadata.deb] section of
#    packaging/deb-metadata.toml and that packaging/changelog names the crate
#    version.
set -euo pipefail

cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

die() {
    echo "build-deb: $*" >&2
    exit 1
}

command -v cargo >/dev/null || die "cargo not found (install Rust with rustup)"

if ! cargo deb --version >/dev/null 2>&1; then
    echo "build-deb: installing cargo-deb from crates.io (takes a few minutes)" >&2
    cargo install cargo-deb --locked >&2 || die "cargo install cargo-deb failed"
fi

grep -q '^\[package\.metadata\.deb\]' Cargo.toml ||
    die "Cargo.toml has no [package.metadata.deb] section: paste it from packaging/deb-metadata.toml"

# The crate version (first `version = "..."` of Cargo.toml, the [package] one)
# must head the Debian changelog, or dpkg and the changelog disagree.
crate_version=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n 1)
changelog_version=$(sed -n '1s/^bms-gateway (\([^)]*\)).*/\1/p' packaging/changelog)
[ "${changelog_version%-*}" = "$crate_version" ] ||
    die "packaging/changelog starts with version '$changelog_version' but Cargo.toml says '$crate_version': add a changelog entry"

template=${BMS_CONFIG_TEMPLATE:-etc/bms_config.toml}
[ -f "$template" ] || die "config template $template not found (it is written by \`bms-gateway --init\`; see etc/)"

staging=target/deb-staging
mkdir -p "$staging"
# Any `GATEWAY-ACTIVATED = true` (not commented out) becomes false.
sed -E 's/^([[:space:]]*"?GATEWAY-ACTIVATED"?[[:space:]]*=[[:space:]]*)true\b/\1false/' \
    "$template" >"$staging/bms_config.toml"
grep -Eq '^[[:space:]]*"?GATEWAY-ACTIVATED"?[[:space:]]*=[[:space:]]*false\b' "$staging/bms_config.toml" ||
    die "$template has no 'GATEWAY-ACTIVATED = false' line (nor a true one to turn off)"
if grep -Eq '^[[:space:]]*"?GATEWAY-ACTIVATED"?[[:space:]]*=[[:space:]]*true\b' "$staging/bms_config.toml"; then
    die "staged config still activates the gateway"
fi
if ! cmp -s "$template" "$staging/bms_config.toml"; then
    echo "build-deb: note: $template says GATEWAY-ACTIVATED = true; the package ships it as false" >&2
fi

# cargo-deb prints the path of the package it made on stdout.
out=$(cargo deb "$@")
deb=$(printf '%s\n' "$out" | tail -n 1)
[ -f "$deb" ] || die "cargo deb did not report a package file (got: $out)"
echo "$deb"
