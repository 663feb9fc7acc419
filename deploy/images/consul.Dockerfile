# herald-consul: the Consul agent herald's tests pin (deploy/consul), FROM
# scratch. `make images` builds it from build/images/consul/, which it fills
# with this file as Dockerfile, the static bin/consul that `make deps`
# builds, herald (for the health check), the host's CA certificates and an
# empty data/.
#
#   docker run herald-consul:latest                       # one server, its data in /data
#   docker run herald-consul:latest agent -dev -client=0.0.0.0
FROM scratch
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# Consul's data dir: writable by the agent's user. Mount a volume here to
# keep it across containers.
COPY --chown=65532:65532 data /data
COPY consul /usr/local/bin/consul
COPY herald /usr/local/bin/herald
# Not root; Consul looks no user up, so there is no /etc/passwd.
USER 65532:65532
# Server RPC, LAN and WAN gossip, HTTP API, DNS.
EXPOSE 8300 8301 8301/udp 8302 8302/udp 8500 8600 8600/udp
# Healthy when the catalog answers, which needs a leader: /v1/status/leader
# answers 200 with "" when there is none.
HEALTHCHECK --interval=5s --timeout=5s --start-period=30s --retries=3 \
	CMD ["/usr/local/bin/herald", "healthcheck", "http://127.0.0.1:8500/v1/catalog/service/consul"]
ENTRYPOINT ["/usr/local/bin/consul"]
# One server that elects itself, with its state in /data, the HTTP API on
# every address, and no attempt to reach HashiCorp's update check (there is
# no route out). Several servers: -bootstrap-expect=3 -retry-join=....
CMD ["agent", "-server", "-bootstrap-expect=1", "-data-dir=/data", "-client=0.0.0.0", "-hcl=disable_update_check = true"]
