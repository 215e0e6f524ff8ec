#!/usr/bin/env bash
# Installs the Debian packages gst-wsiseg needs to build, run and test.
# Usage: pipelines/install-deps.sh [--tests]
set -euo pipefail

pkgs=(meson ninja-build pkg-config gcc
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  libopenslide-dev libdnnl-dev libpng-dev libjson-glib-dev
  libcairo2-dev fonts-dejavu-core)
if [ "${1:-}" = "--tests" ]; then
  pkgs+=(python3 python3-numpy python3-skimage python3-openslide python3-torch python3-torchvision
    libtiff-dev libtiff-tools libvips-tools valgrind)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "Installing: ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
