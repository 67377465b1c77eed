#!/usr/bin/env bash
# The backend matrix, after the core suite: every backend tox env, each in its own virtualenv with
# its extra. ManiSkill needs a Vulkan driver SAPIEN accepts: installed here first when this runs
# as root (or with sudo) on Debian 12 (plugins/pcm_maniskill/install_vulkan.sh, idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
ENVS=${PCM_BACKEND_ENVS:-libero,libero-alone,maniskill,openvla,distributed}
if [[ ,$ENVS, == *,maniskill,* ]]; then
    plugins/pcm_maniskill/install_vulkan.sh
fi
start=$(date +%s)
tox -e "$ENVS"
echo "backend matrix ($ENVS): $(( $(date +%s) - start )) s"
