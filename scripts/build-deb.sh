#!/bin/sh
# Builds llmux_VERSION_ARCH.deb with dpkg-deb from a build made with PREFIX=/usr (`make deb`
# runs it): a staged root, the control files kept in packaging/deb/, Depends: from
# dpkg-shlibdeps on the binaries as linked. Usage: build-deb.sh BUILD_DIR OUT_DIR
set -eu
build=$1
out=$2
version=$(cat VERSION)
arch=$(dpkg --print-architecture)
top=$(sed -n '1s/^llmux (\([^)]*\)).*/\1/p' packaging/deb/changelog)
if [ "$top" != "$version" ]; then
    echo "build-deb: packaging/deb/changelog starts at $top but VERSION is $version" >&2
    exit 1
fi
for page in client/llmux.1 daemon/llmuxd.8; do
    grep -q "\"llmux $version\"" "$page" ||
        { echo "build-deb: $page does not name llmux $version" >&2; exit 1; }
done

work=$build/deb
root=$work/root
rm -rf "$work"
umask 022
doc=$root/usr/share/doc/llmux
install -d "$root/DEBIAN" "$root/usr/bin" "$root/usr/share/man/man1" \
    "$root/usr/share/man/man8" "$root/lib/systemd/system" "$root/usr/lib/sysusers.d" \
    "$root/etc/llmux" "$doc/examples"

install -m 755 "$build/llmuxd" "$build/llmux" "$root/usr/bin/"
strip --strip-unneeded --remove-section=.comment --remove-section=.note \
    "$root/usr/bin/llmuxd" "$root/usr/bin/llmux"
gzip -9n <client/llmux.1 >"$root/usr/share/man/man1/llmux.1.gz"
gzip -9n <daemon/llmuxd.8 >"$root/usr/share/man/man8/llmuxd.8.gz"
install -m 644 "$build/llmux.service" systemd/llmux.socket "$root/lib/systemd/system/"
install -m 644 systemd/llmux.sysusers "$root/usr/lib/sysusers.d/llmux.conf"
install -m 644 conf/llmux.yaml "$root/etc/llmux/llmux.yaml"
# 0640: postinst gives it the llmux group once the user exists.
install -m 640 packaging/deb/llmux.env "$root/etc/llmux/llmux.env"
install -m 644 packaging/deb/copyright "$doc/copyright"
gzip -9n <packaging/deb/changelog >"$doc/changelog.gz"
install -m 644 README.md "$doc/README.md"
install -m 644 conf/README.md "$doc/configuration.md"
install -m 644 docs/service.md "$doc/service.md"
install -m 644 conf/llmux.example.yaml "$doc/examples/llmux.example.yaml"
# Files keep the time of the last commit (or SOURCE_DATE_EPOCH), not of this checkout.
stamp=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
find "$root" -exec touch -h -d "@$stamp" {} +

# dpkg-shlibdeps wants a debian/control naming the package.
mkdir -p "$work/src/debian"
printf 'Source: llmux\n\nPackage: llmux\nArchitecture: any\n' >"$work/src/debian/control"
depends=$(cd "$work/src" && dpkg-shlibdeps -O -e"$OLDPWD/$root/usr/bin/llmuxd" \
    -e"$OLDPWD/$root/usr/bin/llmux" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || { echo "build-deb: dpkg-shlibdeps found no libraries" >&2; exit 1; }
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)

sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@DEPENDS@|$depends|" \
    -e "s|@SIZE@|$size|" packaging/deb/control.in >"$root/DEBIAN/control"
install -m 644 packaging/deb/conffiles "$root/DEBIAN/conffiles"
install -m 755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$root/DEBIAN/"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
    xargs -0 md5sum >DEBIAN/md5sums)
chmod 644 "$root/DEBIAN/md5sums"

mkdir -p "$out"
deb=$out/llmux_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
