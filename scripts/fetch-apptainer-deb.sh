#!/bin/sh
# Fetches Apptainer's .deb from Debian's unstable suite into a cache folder, the way an
# air-gapped site mirrors an upstream release package; no Debian release ships it yet.
#
#   scripts/fetch-apptainer-deb.sh [CACHE_DIR]      (default /var/cache/recipe/apptainer)
#
# Only the .deb is fetched, checked against the SHA256 that the suite's Packages index
# gives for it (an index apt verified through the suite's signed InRelease); a corrupted
# file is refused. Idempotent: does nothing when a .deb is already there (and still
# matches the checksum it was fetched with). Uses its own apt lists and
# sources (nothing in /etc/apt is changed); unstable's Release file may be past its
# Valid-Until date, which is not checked here. Prints the .deb's path on stdout. The
# .deb needs libc6 >= 2.38: it installs on Debian 13 (trixie) hosts, not on Debian 12.
# Serve CACHE_DIR to the hosts (`recipe sandbox up --serve CACHE_DIR`) and point
# singularity.rhai's singularity_package_url at it.
set -eu
dir=${1:-/var/cache/recipe/apptainer}
suite=${APPTAINER_SUITE:-sid}
mirror=${APPTAINER_MIRROR:-http://deb.debian.org/debian}
arch=$(dpkg --print-architecture)
mkdir -p "$dir"
existing=$(ls "$dir"/apptainer_*_"$arch".deb 2>/dev/null | head -n 1 || true)
if [ -n "$existing" ] && [ -f "$existing.sha256" ] &&
    [ "$(sha256sum < "$existing" | cut -d' ' -f1)" = "$(cat "$existing.sha256")" ]; then
    echo "$existing"
    exit 0
fi
state="$dir/.apt"
mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$state/etc/sources.list.d" "$state/etc/preferences.d"
echo "deb $mirror $suite main" > "$state/etc/sources.list"
aptopts="-o Dir::Etc::SourceList=$state/etc/sources.list -o Dir::Etc::SourceParts=$state/etc/sources.list.d \
 -o Dir::Etc::PreferencesParts=$state/etc/preferences.d -o Dir::State::Lists=$state/lists -o Dir::Cache=$state/cache \
 -o Dir::State::Status=/dev/null -o Acquire::Check-Valid-Until=false -o APT::Sandbox::User=root \
 -o Acquire::Languages=none -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false \
 -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false -o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
# shellcheck disable=SC2086
apt-get -q $aptopts update >&2
# 'URI' NAME SIZE SHA256:HASH, from the Packages index.
# shellcheck disable=SC2086
line=$(cd "$state" && apt-get -q $aptopts download --print-uris "apptainer:$arch" | grep "^'" | head -n 1)
if [ -z "$line" ]; then
    echo "the $suite Packages index at $mirror lists no apptainer for $arch" >&2
    exit 1
fi
. "$(dirname "$0")/fetch-listed.sh"
fetch_listed "$line" "$suite Packages" "$dir"
