#!/bin/sh
# Fetches the Slurm source tarball offline-style, from Debian's source package
# (upstream's own download site may be unreachable), into a cache folder.
#
#   scripts/fetch-slurm-source.sh [CACHE_DIR]      (default /var/cache/recipe/src/SUITE)
#
# SLURM_SRC_SUITE picks the Debian release whose Slurm is fetched: bookworm (22.05),
# trixie (24.11). SLURM_SRC_MIRROR overrides the mirror.
# Only the upstream tarball is fetched, checked against the SHA256 that the suite's
# Sources index gives for it (apt verified that index through the suite's signed
# InRelease with the machine's Debian keyring): a mirror that lacks the package's other
# parts (.dsc, .debian.tar.xz) does not matter, a corrupted tarball is refused.
# Idempotent: does nothing when the tarball is already there (and still matches the
# checksum it was fetched with). Uses its own apt lists and a deb-src line of its own
# (nothing in /etc/apt is changed). Prints the tarball's path on stdout. Serve CACHE_DIR to the hosts (for example with
# `recipe sandbox up --serve CACHE_DIR`) and set slurm_build.rhai's variable
#   slurm_url = "<files url>/slurm-wlm_{version}.orig.tar.gz"
set -eu
suite=${SLURM_SRC_SUITE:-bookworm}
dir=${1:-/var/cache/recipe/src/$suite}
mirror=${SLURM_SRC_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$dir"
existing=$(ls "$dir"/slurm-wlm_*.orig.tar.* 2>/dev/null | grep -v '\.sha256$' | head -n 1 || true)
if [ -n "$existing" ] && [ -f "$existing.sha256" ] &&
    [ "$(sha256sum < "$existing" | cut -d' ' -f1)" = "$(cat "$existing.sha256")" ]; then
    echo "$existing"
    exit 0
fi
state="$dir/.apt"
mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$state/etc/sources.list.d" "$state/etc/preferences.d"
echo "deb-src $mirror $suite main" > "$state/etc/sources.list"
aptopts="-o Dir::Etc::SourceList=$state/etc/sources.list -o Dir::Etc::SourceParts=$state/etc/sources.list.d \
 -o Dir::Etc::PreferencesParts=$state/etc/preferences.d -o Dir::State::Lists=$state/lists -o Dir::Cache=$state/cache \
 -o APT::Sandbox::User=root"
# shellcheck disable=SC2086
apt-get -q $aptopts update >&2
# The parts of the source package, each as 'URI' NAME SIZE SHA256:HASH from the index.
# shellcheck disable=SC2086
line=$(cd "$state" && apt-get -q $aptopts source --print-uris slurm-wlm | grep "^'.*\.orig\.tar\.[a-z0-9]*' " | head -n 1)
if [ -z "$line" ]; then
    echo "the $suite Sources index at $mirror lists no upstream tarball of slurm-wlm" >&2
    exit 1
fi
. "$(dirname "$0")/fetch-listed.sh"
fetch_listed "$line" "$suite Sources" "$dir"
