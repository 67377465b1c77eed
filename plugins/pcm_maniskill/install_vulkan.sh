#!/usr/bin/env bash
# Install a Vulkan driver that SAPIEN (ManiSkill3's renderer) accepts on a machine without a GPU:
# Mesa >= 23 lavapipe from Debian bookworm-backports (bookworm's own Mesa 22.3 is refused with
# "Failed to find a supported physical device"). Idempotent and non-interactive; it returns at once
# when a suitable driver is already installed. Run as root (or with sudo available).
# On a machine with an NVIDIA GPU, the NVIDIA driver's Vulkan ICD is used instead; nothing to do.
set -euo pipefail

MIN_MESA_MAJOR=23
SOURCES=/etc/apt/sources.list.d/bookworm-backports.sources

installed_mesa_major() {
    local version
    version=$(dpkg-query -W -f='${db:Status-Abbrev} ${Version}' mesa-vulkan-drivers 2>/dev/null || true)
    [[ $version == ii* ]] || { echo 0; return; }
    version=${version#ii* }
    version=${version#*:}
    echo "${version%%.*}"
}

if [[ $(installed_mesa_major) -ge $MIN_MESA_MAJOR ]] && dpkg-query -W -f='${db:Status-Abbrev}' libvulkan1 2>/dev/null | grep -q '^ii'; then
    echo "vulkan: mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers) already installed"
    exit 0
fi

if ! grep -qs 'VERSION_CODENAME=bookworm' /etc/os-release; then
    echo "vulkan: this script knows Debian 12 (bookworm) only; install Mesa >= $MIN_MESA_MAJOR lavapipe" \
         "(mesa-vulkan-drivers) and libvulkan1 with your package manager" >&2
    exit 1
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "vulkan: run this script as root" >&2; exit 1; }
    SUDO="sudo"
fi

if [[ ! -f $SOURCES ]]; then
    $SUDO tee "$SOURCES" >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null
echo "vulkan: installed mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)"
