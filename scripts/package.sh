#!/usr/bin/env bash
# Build the keep-rsync packages into target/dist/:
#   keep-rsync_VERSION-1_ARCH.deb   (Debian, Ubuntu)
#   keep-rsync-VERSION-1.ARCH.rpm   (RHEL, Rocky, Alma, Fedora)
# Both hold the same files, staged once here:
#   /usr/bin/keep-rsync, /usr/bin/keep-block-check      (cargo --profile dist)
#   /usr/share/man/man1/{keep-rsync,keep-block-check}.1.gz
#   bash, zsh and fish completions                       (generated, crates/xtask)
#   /usr/lib/systemd/system/keep-rsync@.{service,timer}  (packaging/systemd)
#   /usr/lib/sysusers.d/keep-rsync.conf                  (the keep-rsync user)
#   /usr/share/doc/keep-rsync/: copyright (every linked crate's licence,
#     generated from the lock file), README.md, docs, Prometheus alerts,
#     examples (the instance env file, parallel-prefixes.sh, Slurm, Kubernetes)
# Man pages, completions and the licence file come from the code itself
# (`cargo run -p xtask -- assets`), never written by hand. The .deb is built
# with dpkg-deb (Depends from dpkg-shlibdeps), the .rpm with rpmbuild
# (Requires from rpm's ELF scanner); both come from Debian's dpkg-dev and rpm
# packages, which scripts/install-test-deps.sh installs. Version, description
# and licence come from Cargo.toml; `keep-rsync -version` says the version
# and the git commit (KEEP_RSYNC_GIT_COMMIT overrides it, for a build from a
# tarball).
#
# Usage: scripts/package.sh [--profile dist|release|dev] [--no-rpm]
#   --profile  the cargo profile of the binaries (default dist: LTO, one
#              codegen unit, stripped; see docs/benchmarks.md)
#   --no-rpm   only the .deb
# Prints the paths of the packages it wrote, one per line, last.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=dist
rpm=1
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile="$2"; shift ;;
        --no-rpm) rpm=0 ;;
        -h | --help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "package.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
need() {
    command -v "$1" >/dev/null 2>&1 || {
        echo "package.sh: $1 is missing: install $2 (scripts/install-test-deps.sh does)" >&2
        exit 2
    }
}
need dpkg-deb dpkg
need dpkg-shlibdeps dpkg-dev
need python3 python3
[ "$rpm" = 0 ] || need rpmbuild rpm

target=${CARGO_TARGET_DIR:-$PWD/target}
case $profile in
    dev) bindir=$target/debug ;;
    *) bindir=$target/$profile ;;
esac
out=$target/dist
mkdir -p "$out"

# Package metadata from Cargo.toml (cargo metadata, not a second copy).
eval "$(cargo metadata --no-deps --format-version 1 --locked | python3 -c '
import json, shlex, sys
p = next(p for p in json.load(sys.stdin)["packages"] if p["name"] == "keep-rsync")
m = p.get("metadata") or {}
pkg = m.get("package") or {}
for k, v in [("version", p["version"]), ("summary", p["description"]),
             ("license", p["license"]), ("homepage", p.get("homepage") or ""),
             ("maintainer", pkg.get("maintainer", "")),
             ("long_description", pkg.get("long-description", ""))]:
    print(f"{k}={shlex.quote(v)}")
')"
[ -n "$maintainer" ] || { echo "package.sh: Cargo.toml lacks [package.metadata.package] maintainer" >&2; exit 2; }

echo "package.sh: building keep-rsync $version (profile $profile)" >&2
cargo build --profile "$profile" --locked --quiet --bin keep-rsync --bin keep-block-check
for b in keep-rsync keep-block-check; do
    # The container image's runtime (distroless cc) has glibc and libgcc_s,
    # nothing else: refuse a binary that needs more.
    extra=$(readelf -d "$bindir/$b" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' |
        grep -vxE 'libc\.so\.6|libm\.so\.6|libgcc_s\.so\.1|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|ld-linux-x86-64\.so\.2|ld-linux-aarch64\.so\.1' || true)
    if [ -n "$extra" ]; then
        echo "package.sh: $b links $(echo $extra) beyond glibc and libgcc_s; the Containerfile's runtime image lacks it" >&2
        exit 1
    fi
done

assets=$out/assets
rm -rf "$assets"
cargo run --quiet --locked -p xtask -- assets "$assets"

# stage ROOT ZSH_DIR: the package's file tree. Only the zsh completion
# directory differs between the distributions.
stage() {
    local root=$1 zsh=$2 doc=$1/usr/share/doc/keep-rsync
    rm -rf "$root"
    install -d "$root/usr/bin" "$root/usr/share/man/man1" "$doc/examples" "$doc/alerts" \
        "$root/usr/share/bash-completion/completions" "$root$zsh" \
        "$root/usr/share/fish/vendor_completions.d" \
        "$root/usr/lib/systemd/system" "$root/usr/lib/sysusers.d"
    install -m 755 "$bindir/keep-rsync" "$bindir/keep-block-check" "$root/usr/bin/"
    for b in keep-rsync keep-block-check; do
        gzip -9n <"$assets/man/$b.1" >"$root/usr/share/man/man1/$b.1.gz"
        install -m 644 "$assets/completions/bash/$b" "$root/usr/share/bash-completion/completions/$b"
        install -m 644 "$assets/completions/zsh/_$b" "$root$zsh/_$b"
        install -m 644 "$assets/completions/fish/$b.fish" "$root/usr/share/fish/vendor_completions.d/$b.fish"
    done
    install -m 644 packaging/systemd/keep-rsync@.service packaging/systemd/keep-rsync@.timer \
        "$root/usr/lib/systemd/system/"
    install -m 644 packaging/systemd/keep-rsync.sysusers "$root/usr/lib/sysusers.d/keep-rsync.conf"
    install -m 644 "$assets/copyright" "$doc/copyright"
    install -m 644 README.md docs/operations.md docs/scale-out.md docs/protocol.md \
        docs/report-schema.md docs/reliability.md docs/design.md docs/benchmarks.md "$doc/"
    install -m 644 docs/alerts/* "$doc/alerts/"
    install -m 644 packaging/examples/keep-rsync.env "$doc/examples/"
    install -m 755 scripts/parallel-prefixes.sh "$doc/examples/"
    cp -r scripts/slurm scripts/kubernetes "$doc/examples/"
    chmod -R u=rwX,go=rX "$doc"
}

# --- .deb -----------------------------------------------------------------
arch=$(dpkg --print-architecture)
deb_root=$out/deb-root
stage "$deb_root" /usr/share/zsh/vendor-completions
install -d "$deb_root/DEBIAN"
install -m 755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$deb_root/DEBIAN/"
# dpkg-shlibdeps wants a debian/control naming the package; a scratch one.
shl=$(mktemp -d)
trap 'rm -rf "$shl"' EXIT
mkdir "$shl/debian"
printf 'Source: keep-rsync\n\nPackage: keep-rsync\nArchitecture: any\n' >"$shl/debian/control"
depends=$(cd "$shl" && dpkg-shlibdeps -O -e "$deb_root/usr/bin/keep-rsync" -e "$deb_root/usr/bin/keep-block-check" 2>/dev/null |
    sed -n 's/^shlibs:Depends=//p')
installed_size=$(du -sk --exclude=DEBIAN "$deb_root" | cut -f1)
{
    echo "Package: keep-rsync"
    echo "Version: $version-1"
    echo "Architecture: $arch"
    echo "Maintainer: $maintainer"
    echo "Installed-Size: $installed_size"
    echo "Depends: $depends"
    echo "Section: admin"
    echo "Priority: optional"
    [ -z "$homepage" ] || echo "Homepage: $homepage"
    echo "Description: $summary"
    # Continuation lines of the long description: one space in front, "."
    # for an empty line.
    printf '%s\n' "$long_description" | sed -e 's/^$/./' -e 's/^/ /'
} >"$deb_root/DEBIAN/control"
(cd "$deb_root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) \
    >"$deb_root/DEBIAN/md5sums"
deb=$out/keep-rsync_${version}-1_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$deb_root" "$deb" >/dev/null
made=("$deb")

# --- .rpm -----------------------------------------------------------------
if [ "$rpm" = 1 ]; then
    rpm_root=$out/rpm-root
    stage "$rpm_root" /usr/share/zsh/site-functions
    top=$out/rpmbuild
    rm -rf "$top"
    mkdir -p "$top/SPECS"
    {
        sed -e "s|@VERSION@|$version|" -e "s|@SUMMARY@|$summary|" -e "s|@LICENSE@|$license|" \
            -e "s|@URL@|$homepage|" -e '/^URL: *$/d' -e "s|@PACKAGER@|$maintainer|" packaging/rpm/keep-rsync.spec.in |
            awk -v desc="$long_description" '{ if ($0 == "@DESCRIPTION@") print desc; else print }'
        echo "%files"
        (cd "$rpm_root" && find . -type f -printf '/%P\n' | sort)
        (cd "$rpm_root" && find . -path './usr/share/doc/keep-rsync*' -type d -printf '%%dir /%P\n' | sort)
    } >"$top/SPECS/keep-rsync.spec"
    rpmbuild --quiet -bb --define "_topdir $top" --define "_rpmdir $out" \
        --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
        --define "stage $rpm_root" "$top/SPECS/keep-rsync.spec" >"$top/rpmbuild.log" 2>&1 || {
        cat "$top/rpmbuild.log" >&2
        exit 1
    }
    made+=("$out/keep-rsync-$version-1.$(rpm --eval '%{_arch}').rpm")
fi
printf '%s\n' "${made[@]}"
