#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
#
# Builds the distro packages from a clean copy of the source tree: the files git tracks plus the
# untracked files that are not ignored (git ls-files -co --exclude-standard), copied to a temporary
# directory, so the work tree is never touched (no debian/tmp, no obj-*, no build dirs).
#
#   tools/build-packages.sh [--deb] [--rpm] OUTDIR      (neither option: both)
#
#   --deb  dpkg-buildpackage -us -uc -b: the four .deb files, .changes and .buildinfo
#   --rpm  rpmbuild -bb rpm/ztna.spec: the four .rpm files
#
# Writes the packages and one log per tool (build-deb.log, build-rpm.log) into OUTDIR and prints the
# files it built; on failure prints the end of the tool's output and exits non-zero. No tests run here:
# they run in tools/test.sh.
#
# The rpm is built with Debian's rpm, which lacks the Fedora macros the spec uses (%meson, %_unitdir,
# %systemd_post, ...). This script defines the missing ones, and only those, in a macros file it passes
# with --load (on Fedora none is missing and nothing is defined). rpmbuild runs with --nodeps because the
# spec's BuildRequires are rpm names (pkgconfig(libsystemd), systemd-rpm-macros, ...) that no rpm database
# on a dpkg system provides; the build dependencies are the Debian ones from tools/install-deps.sh.
set -euo pipefail

usage() {
        echo "usage: $0 [--deb] [--rpm] OUTDIR" >&2
        exit 2
}

want_deb=0
want_rpm=0
outdir=
for a in "$@"; do
        case $a in
        --deb) want_deb=1 ;;
        --rpm) want_rpm=1 ;;
        -h | --help) usage ;;
        -*) usage ;;
        *)
                [ -z "$outdir" ] || usage
                outdir=$a
                ;;
        esac
done
[ -n "$outdir" ] || usage
if [ $want_deb -eq 0 ] && [ $want_rpm -eq 0 ]; then
        want_deb=1
        want_rpm=1
fi

src=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
jobs=$(nproc 2>/dev/null || echo 2)
version=$(sed -n "s/^ *version *: *'\([^']*\)'.*/\1/p" "$src/meson.build" | head -n1)
[ -n "$version" ] || { echo "build-packages.sh: no version in meson.build" >&2; exit 1; }

work=$(mktemp -d /tmp/ztna-pkg.XXXXXX)
trap 'rm -rf "$work"' EXIT

# fail LABEL LOG: the tool's output (its end: the full log stays in OUTDIR) and a non-zero exit.
fail() {
        echo "build-packages.sh: $1 FAILED; last 150 lines of $2:" >&2
        tail -n 150 "$2" >&2
        exit 1
}

# The clean copy: tracked and untracked-but-not-ignored files that exist (a tracked file deleted in the
# work tree is left out, as a commit of the work tree would leave it out), and nothing from OUTDIR when
# it lies in the tree without being ignored.
tree="$work/ztna-$version"
case "$outdir/" in
"$src"/*) skip="${outdir#"$src"/}/" ;;
*) skip= ;;
esac
copy_tree() {
        rm -rf "$tree"
        mkdir -p "$tree"
        (cd "$src" && git ls-files -co --exclude-standard -z |
                while IFS= read -r -d '' f; do
                        if [ -n "$skip" ] && [ "${f#"$skip"}" != "$f" ]; then continue; fi
                        if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
                done |
                tar --null --no-recursion -T - -cf -) | tar -xf - -C "$tree"
}
copy_tree

built=()

if [ $want_deb -eq 1 ]; then
        rm -f "$outdir"/ztna*.deb "$outdir"/ztna_*.changes "$outdir"/ztna_*.buildinfo
        log="$outdir/build-deb.log"
        start=$SECONDS
        # -b: binary packages only (no source package, so no orig tarball is needed); -jN sets
        # parallel=N in DEB_BUILD_OPTIONS, which dh passes to ninja.
        if ! (cd "$tree" && dpkg-buildpackage -us -uc -b -j"$jobs") >"$log" 2>&1; then
                fail "dpkg-buildpackage" "$log"
        fi
        for f in "$work"/*.deb "$work"/*.changes "$work"/*.buildinfo; do
                [ -e "$f" ] || continue
                cp "$f" "$outdir/"
                built+=("$outdir/$(basename "$f")")
        done
        echo "build-packages.sh: deb built in $((SECONDS - start)) s" >&2
        # dpkg-buildpackage leaves its build products in debian/: the rpm starts from a fresh copy.
        copy_tree
fi

if [ $want_rpm -eq 1 ]; then
        rm -f "$outdir"/ztna*.rpm
        log="$outdir/build-rpm.log"
        start=$SECONDS
        top="$work/rpmbuild"
        mkdir -p "$top"/{BUILD,BUILDROOT,RPMS,SOURCES,SPECS,SRPMS}
        tar -C "$work" -czf "$top/SOURCES/ztna-$version.tar.gz" "ztna-$version"
        # Source1 of the spec: %sysusers_create_compat reads it while the spec is parsed.
        cp "$tree/sysusers/ztna.conf" "$top/SOURCES/ztna.sysusers"

        # Fedora's definitions (redhat-rpm-config, meson's macros.meson, systemd-rpm-macros), reduced to
        # what building here needs; each line is kept only if this rpm lacks the macro it defines.
        macros="$work/macros.fedora-compat"
        : >"$macros"
        while IFS= read -r line; do
                name=${line%% *}
                name=${name#%}
                name=${name%()}
                if [ -z "$(rpm --eval "%{?$name:defined}")" ]; then
                        printf '%s\n' "$line" >>"$macros"
                fi
        done <<'EOF'
%_unitdir /usr/lib/systemd/system
%_userunitdir /usr/lib/systemd/user
%_sysusersdir /usr/lib/sysusers.d
%_tmpfilesdir /usr/lib/tmpfiles.d
%_journalcatalogdir /usr/lib/systemd/catalog
%__meson /usr/bin/meson
%_vpath_srcdir .
%_vpath_builddir %{_vendor}-%{_target_os}-build
%meson %{set_build_flags}; %{__meson} setup --buildtype=plain --prefix=%{_prefix} --libdir=%{_libdir} --libexecdir=%{_libexecdir} --bindir=%{_bindir} --sbindir=%{_sbindir} --includedir=%{_includedir} --datadir=%{_datadir} --mandir=%{_mandir} --infodir=%{_infodir} --localedir=%{_datadir}/locale --sysconfdir=%{_sysconfdir} --localstatedir=%{_localstatedir} --sharedstatedir=%{_sharedstatedir} --wrap-mode=nodownload --auto-features=enabled %{_vpath_srcdir} %{_vpath_builddir}
%meson_build %{__meson} compile -C %{_vpath_builddir} -j %{_smp_build_ncpus}
%meson_install DESTDIR=%{buildroot} %{__meson} install -C %{_vpath_builddir} --no-rebuild
%systemd_post() if [ $1 -eq 1 ]; then systemctl --no-reload preset %{?*} >/dev/null 2>&1 || :; fi
%systemd_preun() if [ $1 -eq 0 ]; then systemctl --no-reload disable --now %{?*} >/dev/null 2>&1 || :; fi
%systemd_postun() if [ $1 -ge 1 ]; then systemctl daemon-reload >/dev/null 2>&1 || :; fi
%systemd_postun_with_restart() if [ $1 -ge 1 ]; then systemctl daemon-reload >/dev/null 2>&1 || :; systemctl try-restart %{?*} >/dev/null 2>&1 || :; fi
%systemd_user_post() if [ $1 -eq 1 ]; then systemctl --global preset %{?*} >/dev/null 2>&1 || :; fi
%systemd_user_preun() if [ $1 -eq 0 ]; then systemctl --global disable %{?*} >/dev/null 2>&1 || :; fi
%tmpfiles_create() [ -x /usr/bin/systemd-tmpfiles ] && /usr/bin/systemd-tmpfiles --create %{?*} || :
%sysusers_create_compat() %(echo 'systemd-sysusers - <<"SYSUSERS_EOF" || :'; cat %{1}; echo SYSUSERS_EOF)
EOF

        if ! rpmbuild -bb --nodeps --load "$macros" --define "_topdir $top" \
                "$tree/rpm/ztna.spec" >"$log" 2>&1; then
                echo "(macros defined for Debian's rpm: $(cut -d' ' -f1 "$macros" | tr '\n' ' '))" >>"$log"
                fail "rpmbuild" "$log"
        fi
        for f in "$top"/RPMS/*/*.rpm; do
                [ -e "$f" ] || continue
                cp "$f" "$outdir/"
                built+=("$outdir/$(basename "$f")")
        done
        echo "build-packages.sh: rpm built in $((SECONDS - start)) s" >&2
fi

printf '%s\n' "${built[@]}"
