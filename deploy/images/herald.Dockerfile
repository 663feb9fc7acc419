# herald: the one binary (gateway, dispatcher and the rest), FROM scratch.
# `make images` builds it from build/images/herald/, which it fills with this
# file as Dockerfile, a static herald and the host's CA certificates.
#
#   docker run herald:latest gateway --listen 0.0.0.0:7001 --public-url ws://HOST:7001/ws ...
#   docker run -e HERALD_HEALTHCHECK_URL=http://127.0.0.1:8080/healthz herald:latest dispatcher --listen 0.0.0.0:8080 ...
#
# herald listens on loopback unless told otherwise, so give a container
# --listen 0.0.0.0:PORT (or HERALD_LISTEN). The gateway and dispatcher
# write no files; `herald cluster init` writes a cluster's secrets into
# /secrets, an empty directory of herald's user, so that a named volume
# mounted there (deploy/compose) starts out writable by it.
FROM scratch
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --chown=65532:65532 secrets /secrets
COPY herald /usr/local/bin/herald
# Not root; nothing in herald looks the user up, so there is no /etc/passwd.
USER 65532:65532
# The gateway's WebSocket port and the dispatcher's API (each serves /healthz).
EXPOSE 7001 8080
# The health check GETs the gateway's /healthz unless the container names
# another URL: a dispatcher's sets HERALD_HEALTHCHECK_URL to its own.
ENV HERALD_HEALTHCHECK_URL=http://127.0.0.1:7001/healthz
HEALTHCHECK --interval=5s --timeout=5s --start-period=30s --retries=3 \
	CMD ["/usr/local/bin/herald", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/herald"]
# Every role needs its addresses and secrets, so there is no default role:
# with no arguments the image lists the commands.
CMD ["help"]
