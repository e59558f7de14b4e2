#!/bin/sh
# Cross-builds the libraries the riscv64 client links (and its unit tests'
# cmocka) from Debian's own source packages into PREFIX, as static libraries
# with pkg-config files: Debian 12 ships the riscv64 cross compiler
# (gcc-riscv64-linux-gnu, libc6-dev-riscv64-cross) but no riscv64 packages.
# `make ARCH=riscv64 client` then links against PREFIX (its pkg-config looks
# only there), and the binary needs nothing on the device but glibc.
#
# Usage: deploy/cross-riscv64-libs.sh [PREFIX]     (make cross-deps ARCH=riscv64)
#   PREFIX: default $FEDOPT_RISCV64_PREFIX, else /opt/fedopt-riscv64
#   FEDOPT_RISCV64_WORK: where sources are fetched and built (default PREFIX.work;
#   kept, so a second run reuses what it fetched)
#
# The sources come through apt-get source with a private APT configuration
# (its own deb-src list, package lists and cache under the work directory):
# the system's apt sources are not touched. apt checks every file against the
# signed Sources index. For each package the newest bookworm version whose
# files the mirror serves is taken (a mirror may lack a superseded security
# upload's files); bookworm's own libinih is tried first, then trixie's
# (inih is one C file with no release-specific code). Debian's patches are
# applied by dpkg-source -x. What was built is written to PREFIX/SOURCES.
# Needs: the toolchain and build tools that `deploy/install-deps.sh --arch
# riscv64` installs (cmake, meson, ninja, dpkg-dev, a native cc for SQLite's
# build-time generators).
set -eu

prefix=${1:-${FEDOPT_RISCV64_PREFIX:-/opt/fedopt-riscv64}}
work=${FEDOPT_RISCV64_WORK:-$prefix.work}
host=riscv64-linux-gnu
jobs=${FEDOPT_JOBS:-2}
# The client's libraries and cmocka (unit tests). OpenBLAS is not among them:
# a riscv64 build uses BLAS=none (the portable GEMM).
packages="zlib sqlite3 libuv1 mbedtls protobuf-c libinih libmicrohttpd cmocka"

command -v $host-gcc >/dev/null || { echo "$0: $host-gcc missing (make cross-deps ARCH=riscv64)" >&2; exit 1; }
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/apt/sources.list.d" \
    "$work/src" "$prefix"
work=$(cd "$work" && pwd)
prefix=$(cd "$prefix" && pwd)
: >"$work/apt/sources.list"
cat >"$work/apt/sources.list.d/fedopt-src.sources" <<EOF
Types: deb-src
URIs: ${FEDOPT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
Suites: bookworm bookworm-updates trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: ${FEDOPT_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
apt_private() {
    cmd=$1
    shift
    "$cmd" -o Dir::Etc::SourceList="$work/apt/sources.list" \
        -o Dir::Etc::SourceParts="$work/apt/sources.list.d" \
        -o Dir::State::Lists="$work/apt/lists" -o Dir::Cache="$work/apt/cache" "$@"
}
apt_private apt-get update -qq || echo "$0: apt-get update reported errors; going on" >&2

# fetch PKG: unpacks the newest bookworm version whose files can be fetched
# (then trixie's) into $work/src/PKG, its version in $work/src/PKG.version.
fetch() {
    pkg=$1
    if [ -f "$work/src/$pkg.version" ] && [ -d "$work/src/$pkg" ]; then
        return 0
    fi
    versions=$(apt_private apt-cache madison "$pkg" | awk -F'|' '$3 ~ /Sources/ {
            gsub(/ /, "", $2); suite = $3; sub(/^ *[^ ]* /, "", suite); sub(/\/.*/, "", suite)
            print (suite ~ /^bookworm/ ? 0 : 1), $2 }' | sort -u)
    tried=""
    for rank in 0 1; do
        for v in $(echo "$versions" | awk -v r=$rank '$1 == r {print $2}' | sort -rV); do
            case " $tried " in *" $v "*) continue ;; esac
            tried="$tried $v"
            rm -rf "$work/src/dl" && mkdir -p "$work/src/dl"
            if (cd "$work/src/dl" && apt_private apt-get source -qq --only-source --download-only "$pkg=$v" \
                >/dev/null 2>&1); then
                rm -rf "$work/src/$pkg"
                (cd "$work/src/dl" && dpkg-source -x ./*.dsc "$work/src/$pkg" >/dev/null 2>&1) ||
                    { echo "$0: dpkg-source -x failed for $pkg $v" >&2; exit 1; }
                echo "$v" >"$work/src/$pkg.version"
                echo "$0: $pkg $v" >&2
                return 0
            fi
            echo "$0: $pkg $v: the mirror does not serve its files; trying another version" >&2
        done
    done
    echo "$0: no version of the source package $pkg could be fetched (tried:$tried)" >&2
    exit 1
}

cc_env="CC=$host-gcc AR=$host-ar RANLIB=$host-ranlib"
cflags="-O2 -g -fPIC"
cmake_cross() { # SRC BUILD ARGS...
    src=$1
    b=$2
    shift 2
    cmake -S "$src" -B "$b" -G Ninja -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=riscv64 \
        -DCMAKE_C_COMPILER=$host-gcc -DCMAKE_AR="$(command -v $host-ar)" \
        -DCMAKE_RANLIB="$(command -v $host-ranlib)" -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_C_FLAGS="$cflags" -DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_INSTALL_LIBDIR=lib \
        -DCMAKE_FIND_ROOT_PATH="$prefix" -DBUILD_SHARED_LIBS=OFF "$@" >/dev/null
    cmake --build "$b" -j "$jobs" >/dev/null
    cmake --install "$b" >/dev/null
}

: >"$prefix/SOURCES"
for p in $packages; do
    fetch "$p"
    echo "$p $(cat "$work/src/$p.version")" >>"$prefix/SOURCES"
done

s=$work/src
b=$work/build
mkdir -p "$b"
# step NAME PKG: false when NAME was already built into this prefix from the
# same source version (a rerun after a failure resumes); done NAME PKG marks it.
step() {
    if [ "$(cat "$b/$1.done" 2>/dev/null)" = "$prefix $(cat "$s/$2.version")" ]; then
        return 1
    fi
    echo "$0: building $1" >&2
    rm -rf "${b:?}/$1"
}
done_step() { echo "$prefix $(cat "$s/$2.version")" >"$b/$1.done"; }

if step zlib zlib; then
    (cd "$s/zlib" && make distclean >/dev/null 2>&1 || true
     cd "$s/zlib" && env CHOST=$host CFLAGS="$cflags" ./configure --prefix="$prefix" --static >/dev/null &&
        make -j "$jobs" libz.a >/dev/null && make install >/dev/null)
    done_step zlib zlib
fi

if step sqlite3 sqlite3; then
    # As debian/rules builds it: its compile-time options, and CROSS_BUILDING=yes
    # so that lemon, a generator run during the build, is built for this machine
    # (BUILD_CC) rather than for riscv64.
    sqlite_opts=$(sed -n '/^export CFLAGS += -O2 -fno-strict-aliasing/,/^$/p' "$s/sqlite3/debian/rules" |
        tr ' \\\t' '\n\n\n' | grep '^-DSQLITE_' | tr '\n' ' ')
    [ -n "$sqlite_opts" ] || { echo "$0: no SQLITE_ options found in sqlite3's debian/rules" >&2; exit 1; }
    mkdir -p "$b/sqlite3"
    (cd "$b/sqlite3" && env $cc_env BUILD_CC=cc CROSS_BUILDING=yes CFLAGS="$cflags $sqlite_opts" \
        "$s/sqlite3/configure" --host=$host --build="$(cc -dumpmachine)" --prefix="$prefix" \
        --disable-shared --enable-static --disable-tcl --disable-readline --disable-editline \
        --enable-threadsafe --enable-json --disable-amalgamation >/dev/null &&
        make -j "$jobs" CROSS_BUILDING=yes lib_install sqlite3.h sqlite3.pc >/dev/null &&
        mkdir -p "$prefix/include" "$prefix/lib/pkgconfig" &&
        cp sqlite3.h "$s/sqlite3/src/sqlite3ext.h" "$prefix/include/" && cp sqlite3.pc "$prefix/lib/pkgconfig/")
    done_step sqlite3 sqlite3
fi

if step libuv libuv1; then
    cmake_cross "$s/libuv1" "$b/libuv" -DLIBUV_BUILD_TESTS=OFF -DLIBUV_BUILD_BENCH=OFF
    # libuv's CMake names the static library uv_a (libuv-static.pc); the Makefile
    # asks pkg-config for libuv.
    if [ -f "$prefix/lib/libuv_a.a" ]; then
        cp "$prefix/lib/libuv_a.a" "$prefix/lib/libuv.a"
    fi
    rm -f "$prefix"/lib/libuv.so*
    sed 's/-luv_a/-luv/' "$prefix/lib/pkgconfig/libuv-static.pc" >"$prefix/lib/pkgconfig/libuv.pc" 2>/dev/null || true
    done_step libuv libuv1
fi

if step mbedtls mbedtls; then
    # Debian's configuration (debian/rules sets these in config.h: threading
    # among them, which the client's TLS relies on).
    (cd "$s/mbedtls" && sed -n 's/^[[:space:]]*scripts\/config.py set //p' debian/rules | while read -r opt; do
        python3 scripts/config.py set "$opt"
    done)
    grep -q '^#define MBEDTLS_THREADING_C' "$s/mbedtls/include/mbedtls/config.h" ||
        { echo "$0: mbedtls config.h: Debian's settings were not applied" >&2; exit 1; }
    cmake_cross "$s/mbedtls" "$b/mbedtls" -DENABLE_TESTING=OFF -DENABLE_PROGRAMS=OFF \
        -DUSE_STATIC_MBEDTLS_LIBRARY=ON -DUSE_SHARED_MBEDTLS_LIBRARY=OFF -DMBEDTLS_FATAL_WARNINGS=OFF
    done_step mbedtls mbedtls
fi

if step protobuf-c protobuf-c; then
    mkdir -p "$b/protobuf-c"
    (cd "$b/protobuf-c" && env $cc_env CFLAGS="$cflags" "$s/protobuf-c/configure" --host=$host \
        --prefix="$prefix" --disable-shared --enable-static --disable-protoc >/dev/null &&
        make -j "$jobs" >/dev/null && make install >/dev/null)
    done_step protobuf-c protobuf-c
fi

if step libinih libinih; then
    cat >"$b/meson-cross.ini" <<EOF
[binaries]
c = '$host-gcc'
cpp = '$host-g++'
ar = '$host-ar'
strip = '$host-strip'
pkgconfig = 'false'

[host_machine]
system = 'linux'
cpu_family = 'riscv64'
cpu = 'riscv64'
endian = 'little'
EOF
    meson setup "$b/inih" "$s/libinih" --cross-file "$b/meson-cross.ini" --prefix="$prefix" --libdir=lib \
        --buildtype=release -Ddefault_library=static -Ddistro_install=true -Dwith_INIReader=false >/dev/null
    ninja -C "$b/inih" >/dev/null
    meson install -C "$b/inih" >/dev/null
    done_step libinih libinih
fi

if step libmicrohttpd libmicrohttpd; then
    # Without HTTPS: the client's metrics endpoint is plain HTTP on loopback or a
    # scrape network (common/net/metrics), and riscv64 has no GnuTLS to build on.
    mkdir -p "$b/libmicrohttpd"
    (cd "$b/libmicrohttpd" && env $cc_env CFLAGS="$cflags" "$s/libmicrohttpd/configure" --host=$host \
        --prefix="$prefix" --disable-shared --enable-static --disable-https --disable-doc \
        --disable-examples --disable-curl >/dev/null &&
        make -j "$jobs" -C src/microhttpd >/dev/null && make -C src/microhttpd install >/dev/null &&
        mkdir -p "$prefix/lib/pkgconfig" && cp libmicrohttpd.pc "$prefix/lib/pkgconfig/")
    done_step libmicrohttpd libmicrohttpd
fi

if step cmocka cmocka; then
    cmake_cross "$s/cmocka" "$b/cmocka" -DWITH_STATIC_LIB=ON -DWITH_EXAMPLES=OFF -DUNIT_TESTING=OFF
    # cmocka 1.1 names its static library cmocka-static.
    if [ -f "$prefix/lib/libcmocka-static.a" ] && [ ! -f "$prefix/lib/libcmocka.a" ]; then
        cp "$prefix/lib/libcmocka-static.a" "$prefix/lib/libcmocka.a"
    fi
    done_step cmocka cmocka
fi

# Static only: the client then needs nothing on the device but glibc.
rm -f "$prefix"/lib/*.so "$prefix"/lib/*.so.* "$prefix"/lib/*.la
for pc in libuv libprotobuf-c sqlite3 zlib inih libmicrohttpd cmocka; do
    PKG_CONFIG_LIBDIR="$prefix/lib/pkgconfig" pkg-config --exists "$pc" ||
        { echo "$0: $pc.pc missing in $prefix/lib/pkgconfig" >&2; exit 1; }
done
[ -f "$prefix/lib/libmbedtls.a" ] || { echo "$0: libmbedtls.a missing" >&2; exit 1; }
echo "$0: done: $prefix ($(tr '\n' ' ' <"$prefix/SOURCES"))" >&2
