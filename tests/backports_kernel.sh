#!/bin/bash
# Fetch Debian's current kernel from trixie-backports (7.x: it threads WireGuard
# from birth) for the real-WireGuard tier, without touching the machine's apt
# state or its /lib/modules. Called by `./dev setup` (setup_kernel); run alone
# as root: tests/backports_kernel.sh
#
# - A temporary sources list for the suite, on the mirror the host's apt
#   already uses; its own lists and cache dirs (nothing under /var/lib/apt).
# - linux-image-amd64 of that suite names <ver>; `apt-get download` fetches
#   linux-binary-<ver> (the image, usr/lib/modules/<ver>/vmlinuz) and
#   linux-modules-<ver>. They do not install with dpkg on Debian 12 (newer
#   dependencies, KERNEL-FACTS.md): they are unpacked with dpkg-deb -x into
#   $CACHE/root, and depmod builds modules.dep there.
# - vng boots $CACHE/root/usr/lib/modules/<ver>/vmlinuz and finds its modules
#   beside it (virtme-ng: the root of a kernel path with usr/lib/modules; the
#   guest gets /lib/modules/<ver> linked to that directory).
# - Offline with a cached kernel: keeps it (prints why). Older versions are
#   removed, so the tier boots one 7.x kernel.
#
# Prints the path of the kernel image on success.
set -euo pipefail

SUITE=${WGNAPID_BACKPORTS_SUITE:-trixie-backports}
CACHE=${WGNAPID_BACKPORTS_CACHE:-/var/cache/wgnapid-ci/$SUITE-kernel}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

say() { echo "backports-kernel: $*" >&2; }

# The Debian mirror the host's apt uses (deb822 or one-line sources), else deb.debian.org.
mirror() {
    local m
    m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '/^URIs:/ {print $2}' | grep -E '/debian/?$' | head -n1 || true)
    [ -n "$m" ] || m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' \
        | grep -E '/debian/?$' | head -n1 || true)
    echo "${m:-http://deb.debian.org/debian}"
}

cached() { ls -d "$CACHE"/root/usr/lib/modules/*/vmlinuz 2>/dev/null | head -n1; }

tmp=$(mktemp -d /tmp/wgnapid-backports.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
echo "deb [signed-by=$KEYRING] $(mirror) $SUITE main" > "$tmp/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache"
          -o Dir::State::Status=/dev/null -o APT::Sandbox::User=root -q)

if ! apt-get "${apt_opts[@]}" update >"$tmp/update.log" 2>&1; then
    if [ -n "$(cached)" ]; then
        say "apt-get update for $SUITE failed; keeping the cached $(cached)"
        cached; exit 0
    fi
    cat "$tmp/update.log" >&2
    say "cannot fetch the $SUITE package lists and nothing is cached"; exit 1
fi
ver=$(apt-cache "${apt_opts[@]}" show linux-image-amd64 \
      | sed -n 's/^Depends:.*linux-image-\([0-9][^ ,]*-amd64\).*/\1/p' | sort -V | tail -n1)
[ -n "$ver" ] || { say "linux-image-amd64 of $SUITE names no kernel"; exit 1; }

root=$CACHE/root
image=$root/usr/lib/modules/$ver/vmlinuz
if [ -f "$image" ] && [ -f "$root/usr/lib/modules/$ver/modules.dep" ] \
        && [ -f "$CACHE/$ver.done" ]; then
    echo "$image"; exit 0
fi

say "fetching linux-binary-$ver and linux-modules-$ver from $(mirror) $SUITE"
mkdir -p "$CACHE/debs"
rm -f "$CACHE"/debs/*.deb
(cd "$CACHE/debs" && apt-get "${apt_opts[@]}" download "linux-binary-$ver" "linux-modules-$ver")
# Only the current version stays: the tier boots every kernel it finds.
rm -rf "$root" "$CACHE"/*.done
mkdir -p "$root"
for deb in "$CACHE"/debs/*.deb; do dpkg-deb -x "$deb" "$root"; done
depmod -a -b "$root/usr" "$ver"
[ -f "$image" ] || { say "no $image in the packages"; exit 1; }
ls "$root/usr/lib/modules/$ver/kernel/drivers/net/wireguard/"wireguard.ko* >/dev/null
touch "$CACHE/$ver.done"
echo "$image"
