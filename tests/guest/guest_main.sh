#!/bin/bash
# Entry point inside the qemu guest (booted by tests/test_kernel_tier.py with
# `vng --exec`). Usage: guest_main.sh OUTDIR
#   OUTDIR  a directory shared read-write with the host (vng --rwdir); it holds
#           pytest-args (one argument a line, written by the host) and receives
#           results.jsonl, junit.xml, journal.json, timings.
# The exit code is pytest's.
set -u
out=$1
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=${WGNAPID_VENV:-$repo/.venv-debian13}

read -r up _ < /proc/uptime
echo "guest_userland_uptime $up" > "$out/timings"
echo "guest: $(uname -r), userland up at ${up}s of uptime"

modprobe wireguard || { echo "guest: modprobe wireguard failed" >&2; exit 90; }

# journald, standalone (no systemd in the guest); volatile storage under /run.
mkdir -p /run/systemd/journal
/lib/systemd/systemd-journald > "$out/journald.log" 2>&1 &
for _ in $(seq 200); do [ -S /run/systemd/journal/socket ] && break; sleep 0.05; done
[ -S /run/systemd/journal/socket ] || { echo "guest: journald did not start" >&2; exit 91; }

mapfile -t args < "$out/pytest-args"
export WGNAPID_GUEST=1 WGNAPID_GUEST_RESULTS=$out/results.jsonl WGNAPID_VENV=$venv
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
cd "$repo"
# --confcutdir: only tests/guest/conftest.py applies in here, whatever tests/
# conftest.py the host tiers use. The root filesystem is read-only: no cache.
"$venv/bin/python" -m pytest -p no:cacheprovider --confcutdir="$here" --rootdir="$repo" \
    -m guest -rA -v --junitxml="$out/junit.xml" -o junit_logging=all \
    --basetemp=/tmp/wgnapid-guest "${args[@]}"
rc=$?
read -r up _ < /proc/uptime
echo "guest_done_uptime $up" >> "$out/timings"
journalctl -o json --no-pager -q > "$out/journal.json" 2>/dev/null
exit $rc
