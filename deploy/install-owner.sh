#!/bin/sh
# The part of `make install` that concerns the service's user: the unit runs
# fedopt-server as User=fedopt, so the configuration (mode 0640) must belong
# to group fedopt and the state directory to the user, or the service cannot
# read its own config.
#  - On the live system (no DESTDIR), creates the user from the installed
#    sysusers.d file when systemd-sysusers exists (a no-op when it exists).
#  - Gives CONFIG group fedopt and STATEDIR owner fedopt when the user exists:
#    in the target's own /etc/passwd and /etc/group for a staged install
#    (DESTDIR), through NSS (getent) on the live system. Only our own default
#    (root) is changed: an ownership an administrator chose is kept.
#  - Otherwise says what is left to do, and succeeds: a staged install for a
#    package leaves the user to the package's postinst.
# Usage: deploy/install-owner.sh DESTDIR SYSUSERS_FILE CONFIG STATEDIR
#        (the last three as installed, without DESTDIR)
set -u
destdir=$1
sysusers=$2
config=$3
state=$4
user=fedopt

if [ -z "$destdir" ] && command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers "$sysusers" || echo "fedopt: systemd-sysusers $sysusers failed (not root?)" >&2
fi

if [ -z "$destdir" ]; then
    where="on this system"
    uid=$(getent passwd "$user" | cut -d: -f3)
    gid=$(getent group "$user" | cut -d: -f3)
else
    where="in $destdir/etc/passwd and group"
    uid=$(awk -F: -v n="$user" '$1 == n { print $3 }' "$destdir/etc/passwd" 2>/dev/null)
    gid=$(awk -F: -v n="$user" '$1 == n { print $3 }' "$destdir/etc/group" 2>/dev/null)
fi

if [ -z "$gid" ] || [ -z "$uid" ]; then
    echo "fedopt: no user and group '$user' $where yet, so $config stays root:root (0640) and" >&2
    echo "fedopt: the service cannot read it: create the user (systemd-sysusers $sysusers) and run" >&2
    echo "fedopt: make install again, or: chgrp $user $config && chown $user: $state" >&2
    exit 0
fi
if [ "$(stat -c %g "$destdir$config")" = 0 ]; then
    chgrp "$gid" "$destdir$config" || echo "fedopt: cannot chgrp $user $config (not root?)" >&2
fi
if [ "$(stat -c %u "$destdir$state")" = 0 ]; then
    chown "$uid:$gid" "$destdir$state" || echo "fedopt: cannot chown $user: $state (not root?)" >&2
fi
exit 0
