#!/usr/bin/env bash
# Installs and starts a Docker engine, and builds the offline base image of the sandbox
# image (no registry is reachable: debootstrap from the Debian mirror). Idempotent; root.
#
#   bash .ci/docker-setup.sh        # then: make sandbox-wheels sandbox-image
set -euo pipefail
BASE_IMAGE=${SANDBOX_BASE:-local/debian-python:bookworm}

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
    (dockerd >/tmp/dockerd.log 2>&1 &)
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { tail -n 30 /tmp/dockerd.log; echo "dockerd did not start" >&2; exit 1; }
fi
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    rootfs=$(mktemp -d)
    debootstrap --variant=minbase --include=python3 bookworm "$rootfs" "${MIRROR:-http://deb.debian.org/debian}" >/tmp/debootstrap.log 2>&1 \
        || { tail -n 30 /tmp/debootstrap.log; exit 1; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
fi
echo "docker ready; base image $BASE_IMAGE"
