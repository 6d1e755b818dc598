# test_install.sh -- acceptance 6: `make install DESTDIR=...` into a scratch
# folder, then examples/train_predict.c built with
# `pkg-config --cflags --libs moe` against it (shared, and static with
# --static), and run.
. tests/cli/lib.sh

dest="$TMP/root"
# Under `make sanitize` the build tree holds sanitizer objects: give the
# recursive make the same flags, so nothing gets relinked without them.
san=""
set --
if nm -D "$BUILD/libmoe.so.0.1.0" 2>/dev/null | grep -q __asan_init; then
    san="-fsanitize=address,undefined"
    set -- OPT=-O1 "SAN=-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"
fi
echo "  make install $*" 
if ! make -s -C "$ROOT" BUILD="$BUILD" "$@" DESTDIR="$dest" install > install.log 2>&1; then
    fail make_install "$(tail -3 install.log)"
    exit 0
fi
pass make_install
p="$dest/usr/local"
check installed_files sh -c 'for f in bin/moe lib/libmoe.a lib/libmoe.so.0.1.0 include/moe.h lib/pkgconfig/moe.pc share/man/man1/moe.1; do [ -f "$0/$f" ] || { echo "  missing $f"; exit 1; }; done' "$p"
check soname_links sh -c '[ "$(readlink "$0/lib/libmoe.so.0")" = libmoe.so.0.1.0 ] && [ "$(readlink "$0/lib/libmoe.so")" = libmoe.so.0 ]' "$p"
if command -v objdump >/dev/null 2>&1; then
    check soname sh -c 'objdump -p "$0/lib/libmoe.so.0.1.0" | grep -q "SONAME *libmoe.so.0$"' "$p"
fi
check installed_program sh -c '"$0/bin/moe" --version | grep -q "^moe 0\."' "$p"
check installed_header sh -c 'cmp -s "$0/include/moe.h" "$1/include/moe.h"' "$p" "$ROOT"


export PKG_CONFIG_PATH="$p/lib/pkgconfig"
flags=$(PKG_CONFIG_SYSROOT_DIR="$dest" pkg-config --cflags --libs moe)
check pkg_config_flags sh -c 'case "$0" in *"-I$1/include"*"-L$1/lib"*"-lmoe"*) exit 0;; *) echo "  flags: $0"; exit 1;; esac' "$flags" "$p"
check pkg_config_version [ "$(pkg-config --modversion moe)" = 0.1.0 ]
# shellcheck disable=SC2086
if cc -std=c11 -Wall -Wextra -Werror $san "$ROOT/examples/train_predict.c" $flags -o example 2> cc.log; then
    pass example_builds_shared
else
    fail example_builds_shared "$(head -3 cc.log)"
fi
LD_LIBRARY_PATH="$p/lib" ./example > ex.txt 2>&1
rc=$?
check example_runs sh -c '[ $0 -eq 0 ] && grep -q "round trip (.*bytes): identical" ex.txt' $rc
check example_uses_installed_library sh -c 'LD_LIBRARY_PATH="$0/lib" ldd ./example | grep -q "libmoe.so.0 => $0/lib/libmoe.so.0"' "$p"
LD_LIBRARY_PATH="$p/lib" ./example "$DATA/mcycle_train.csv" > ex_csv.txt 2>&1
rc=$?
check example_runs_on_csv sh -c '[ $0 -eq 0 ] && grep -q "identical" ex_csv.txt' $rc

# Static: relocate the .pc with --define-variable, take libmoe.a.
sflags=$(pkg-config --define-variable=prefix="$p" --static --cflags --libs moe | sed 's/-lmoe\b/-l:libmoe.a/')
# shellcheck disable=SC2086
if cc -std=c11 $san "$ROOT/examples/train_predict.c" $sflags -o example_static 2> cc2.log; then
    pass example_builds_static
else
    fail example_builds_static "$(head -3 cc2.log)"
fi
./example_static > exs.txt 2>&1
rc=$?
check example_static_runs sh -c '[ $0 -eq 0 ] && grep -q "identical" exs.txt && ! ldd ./example_static | grep -q libmoe' $rc
