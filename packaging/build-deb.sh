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
#  * checks the package metadata, [package.metadata.deb] in Cargo.toml (the
#    one copy), as cargo itself parses it: the keys the package needs are
#    there, and every file it names exists (the binary and the staged config
#    excepted, which the build makes); and that packaging/changelog names the
#    crate version.
set -euo pipefail

cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

die() {
    echo "build-deb: $*" >&2
    exit 1
}

command -v cargo >/dev/null || die "cargo not found (install Rust with rustup)"

# The metadata as cargo-deb will read it (cargo parses Cargo.toml for us).
metadata_problems=$(cargo metadata --no-deps --format-version 1 --offline | python3 -c '
import json, os, sys
pkg = next(p for p in json.load(sys.stdin)["packages"] if p["name"] == "bms-gateway")
deb = (pkg.get("metadata") or {}).get("deb")
if deb is None:
    print("Cargo.toml has no [package.metadata.deb] section")
    sys.exit(0)
need = ["maintainer", "copyright", "depends", "extended-description", "changelog",
        "maintainer-scripts", "assets", "systemd-units"]
problems = ["[package.metadata.deb] has no %s" % k for k in need if k not in deb]
files = [deb.get("changelog"), deb.get("maintainer-scripts")]
# Built by cargo or staged by this script: not there before the build.
files += [a[0] for a in deb.get("assets", []) if not a[0].startswith("target/")]
problems += ["[package.metadata.deb] names %s, which does not exist" % f for f in files if f and not os.path.exists(f)]
# One entry or a list; cargo-deb looks for UNIT-NAME.TYPE in unit-scripts,
# or PACKAGE@.UNIT-NAME.TYPE for a template unit.
units = deb.get("systemd-units") or []
for unit in [units] if isinstance(units, dict) else units:
    d, name = unit.get("unit-scripts", "."), unit.get("unit-name", pkg["name"])
    prefixes = (name + ".", pkg["name"] + "@." + name + ".")
    if not (os.path.isdir(d) and any(f.startswith(prefixes) for f in os.listdir(d))):
        problems.append("[package.metadata.deb] systemd-units: no unit file for %s in %s" % (name, d))
print("\n".join(problems))
') || die "cannot read the package metadata: $metadata_problems"
[ -z "$metadata_problems" ] || die "$metadata_problems"

if ! cargo deb --version >/dev/null 2>&1; then
    echo "build-deb: installing cargo-deb from crates.io (takes a few minutes)" >&2
    cargo install cargo-deb --locked >&2 || die "cargo install cargo-deb failed"
fi


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
