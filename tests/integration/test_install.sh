#!/bin/sh
# `make install` gives the service what it needs to start as its own user
# (User=fedopt in the unit): a staged install (DESTDIR, PREFIX=/usr) ships the
# sysusers.d file; the user is created from it inside the staged root
# (systemd-sysusers --root, or useradd --prefix), the install run again gives
# that user the config (0640, group fedopt) and the state directory; then the
# installed server, run as that user and group (setpriv, no other groups),
# reads the installed config and listens. The host's own users are never
# touched: everything lives in a temporary root and runs under numeric ids.
set -u
build=${1:-build}
build=$(cd "$build" && pwd)
repo=$(cd "$(dirname "$0")/../.." && pwd)
[ "$(id -u)" -eq 0 ] || { echo "skip: needs root (to run the server as another user)"; exit 77; }
command -v setpriv >/dev/null 2>&1 || { echo "skip: no setpriv (util-linux) to switch users"; exit 77; }

work=$(mktemp -d /tmp/fedopt-install-test.XXXXXX)
chmod 711 "$work" # the service user must reach its files in here
root=$work/root
pid=""
cleanup() {
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

# Installs what $build holds, building nothing (-o all): under `make test` the
# outer make's flags (SANITIZE, CC) are not ours to repeat, and its jobserver
# is not lent to us.
install_staged() {
    env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s -o all -C "$repo" BUILD="$build" install DESTDIR="$root" PREFIX=/usr \
        >"$work/install.log" 2>&1 || fail "make install: $(cat "$work/install.log")"
}

install_staged
sysusers=$root/usr/lib/sysusers.d/fedopt.conf
config=$root/etc/fedopt/server.ini
state=$root/var/lib/fedopt-server
[ -x "$root/usr/bin/fedopt-server" ] || fail "no $root/usr/bin/fedopt-server"
[ -f "$sysusers" ] || fail "make install ships no sysusers.d/fedopt.conf: nothing creates the unit's User=fedopt"
[ "$(stat -c %a "$config")" = 640 ] || fail "server.ini mode $(stat -c %a "$config"), want 640"
[ -d "$state" ] || fail "no state directory $state"
grep -q '^User=fedopt$' "$root/usr/lib/systemd/system/fedopt-server.service" || fail "the unit does not run as fedopt"
# No such user in the staged root yet: the install says what is left to do.
grep -q "no user and group 'fedopt'" "$work/install.log" || fail "install did not say the user is missing: $(cat "$work/install.log")"

# The user, from the staged file (the same line a package's postinst runs).
mkdir -p "$root/etc"
if command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers --root="$root" "$sysusers" >"$work/users.log" 2>&1 || fail "systemd-sysusers: $(cat "$work/users.log")"
elif command -v useradd >/dev/null 2>&1 && useradd --help 2>&1 | grep -q -- '--prefix'; then
    set -- $(awk '$1 == "u" { print $2 }' "$sysusers")
    [ $# -eq 1 ] || fail "sysusers file declares $# users, want 1"
    touch "$root/etc/passwd" "$root/etc/group" "$root/etc/shadow" "$root/etc/gshadow"
    useradd --prefix "$root" --system --user-group --no-create-home --home-dir /var/lib/fedopt-server \
        --shell /usr/sbin/nologin "$1" >"$work/users.log" 2>&1 || fail "useradd: $(cat "$work/users.log")"
else
    echo "skip: neither systemd-sysusers nor useradd --prefix to create the user in a staged root"
    exit 77
fi
uid=$(awk -F: '$1 == "fedopt" { print $3 }' "$root/etc/passwd")
gid=$(awk -F: '$1 == "fedopt" { print $3 }' "$root/etc/group")
[ -n "$uid" ] && [ -n "$gid" ] && [ "$uid" != 0 ] || fail "the sysusers file did not create a user fedopt"

# Installed again, now that the target has the user: the config is the
# group's, the state directory the user's; the config itself is unchanged.
cp "$config" "$work/server.ini.before"
install_staged
[ "$(stat -c %a:%u:%g "$config")" = "640:0:$gid" ] || fail "server.ini is $(stat -c %a:%u:%g "$config"), want 640:0:$gid"
[ "$(stat -c %a:%u "$state")" = "700:$uid" ] || fail "state directory is $(stat -c %a:%u "$state"), want 700:$uid"
cmp -s "$config" "$work/server.ini.before" || fail "a second install changed server.ini"

# The installed server as fedopt, with the installed config; only what this
# machine lacks (the PKI, a free port, the evaluation data) comes from flags.
pki=$work/pki
"$build/fedopt-server" certs init "$pki" >/dev/null || fail "certs init"
chown -R "$uid:$gid" "$pki"
log=$work/server.log
(cd "$state" && exec setpriv --reuid="$uid" --regid="$gid" --clear-groups "$root/usr/bin/fedopt-server" run \
    --config "$config" --listen 127.0.0.1:0 --tls-cert "$pki/server.crt" --tls-key "$pki/server.key" \
    --tls-ca "$pki/ca.crt" --db "$state/fedopt.db" --eval-data "" >"$log" 2>&1) &
pid=$!
i=0
until grep -q 'listening on 127.0.0.1 port' "$log"; do
    kill -0 "$pid" 2>/dev/null || fail "the server as fedopt did not start: $(cat "$log")"
    i=$((i + 1))
    [ $i -gt 600 ] && fail "the server as fedopt did not listen within 60 s: $(cat "$log")"
    sleep 0.1
done
# The installed config's own settings are in force (model cnn, fedadam, 1500 rounds of 10).
# The run is opened after the listener is bound: its line may follow the listening line.
i=0
until grep -q 'run 1: model' "$log" || [ $i -gt 300 ]; do i=$((i + 1)); sleep 0.1; done
grep -q 'run 1: model cnn (.*), fedadam, 1500 rounds of 10 clients' "$log" ||
    fail "the server did not run the installed config: $(cat "$log")"
[ "$(stat -c %u "$state/fedopt.db")" = "$uid" ] || fail "the database is not the service user's"
kill -TERM "$pid"
wait "$pid"
rc=$?
pid=""
[ "$rc" -eq 0 ] || fail "server exit $rc after SIGTERM: $(tail -n 5 "$log")"
echo "ok: staged make install; the sysusers.d user reads the 0640 root:fedopt config and owns the state directory; the server ran as uid $uid and stopped cleanly"
