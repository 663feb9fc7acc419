#!/usr/bin/env bash
# build.sh CONTEXT TAG... builds the image whose Dockerfile and files are in
# CONTEXT with Docker's classic builder (there is no BuildKit here), tags it
# TAG..., and removes each image those tags named before if that one is left
# dangling (untagged, no child images), so rebuilding after a change leaves
# none behind. An image still used by a container is left, with a warning.
# `make images` runs it; only what it replaced is ever removed, never by
# pruning, since other people's images share the engine.
set -euo pipefail

ctx=$1
shift
tags=("$@")

old=()
for tag in "${tags[@]}"; do
	if id=$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null); then
		old+=("$id")
	fi
done

args=()
for tag in "${tags[@]}"; do
	args+=(--tag "$tag")
done
DOCKER_BUILDKIT=0 docker build --force-rm "${args[@]}" "$ctx"

new=$(docker image inspect --format '{{.Id}}' "${tags[0]}")
dangling=$(docker images --quiet --no-trunc --filter dangling=true)
for id in $(printf '%s\n' "${old[@]}" | sort -u); do
	if [[ $id != "$new" ]] && grep -qxF "$id" <<<"$dangling"; then
		docker rmi "$id" >/dev/null || echo "build.sh: left the replaced image $id: it is still in use" >&2
	fi
done
