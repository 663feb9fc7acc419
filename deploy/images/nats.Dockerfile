# herald-nats: nats-server with JetStream, FROM scratch. `make images` builds
# it from build/images/nats/, which it fills with this file as Dockerfile,
# nats-server built from the version herald's go.mod requires, herald (for
# the health check), nats-server.conf, the host's CA certificates and an
# empty data/.
#
#   docker run herald-nats:latest                         # one server, JetStream in /data
#   docker run herald-nats:latest --config /etc/nats/nats-server.conf --server_name n1 --cluster ...
FROM scratch
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# JetStream's store: writable by the server's user. Mount a volume here to
# keep it across containers.
COPY --chown=65532:65532 data /data
COPY nats-server /usr/local/bin/nats-server
COPY nats-server.conf /etc/nats/nats-server.conf
COPY herald /usr/local/bin/herald
# Not root; nats-server looks no user up, so there is no /etc/passwd.
USER 65532:65532
# Clients, cluster routes, monitoring (/healthz, /varz, /jsz).
EXPOSE 4222 6222 8222
# nats-server's /healthz is 200 once JetStream is ready, 503 before.
HEALTHCHECK --interval=5s --timeout=5s --start-period=30s --retries=3 \
	CMD ["/usr/local/bin/herald", "healthcheck", "http://127.0.0.1:8222/healthz"]
ENTRYPOINT ["/usr/local/bin/nats-server"]
# Flags after the config file win over it.
CMD ["--config", "/etc/nats/nats-server.conf"]
