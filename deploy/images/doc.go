// Package images holds what herald's container images are built from: one
// Dockerfile per image (herald, herald-nats, herald-consul), all FROM
// scratch, the NATS server's configuration, build.sh, which `make images`
// runs for each image, and smoke.sh, which runs the images for real. The
// package has no code; its test checks nats-server.conf with the NATS
// server's own parser, so that `make test` catches a broken or drifted
// configuration without Docker.
package images
