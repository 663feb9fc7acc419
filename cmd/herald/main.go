// Command herald is herald's one binary: each part of the system is a
// subcommand. Only this package reads flags, the environment and signals.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// hardStop is closed by the second SIGINT or SIGTERM. The first ends the
// command's context, which for a gateway means drain; the second means stop
// now.
var hardStop = make(chan struct{})

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string) error
}

var commands = []command{
	{"bench", "measure a running cluster: ring, notify, batch, fan-in, broadcast, replay, connections (a table, and JSON with --out)", runBench},
	{"chaos", "kill, drain and scale gateways under load; check nothing is lost", runChaos},
	{"cluster", "set up a production cluster's secrets and configurations (init), and Consul's ACLs (consul-bootstrap)", runCluster},
	{"dev", "run the whole system locally: Consul, NATS, 3 gateways, 2 dispatchers", runDev},
	{"demo", "serve the demo page for a real cluster, keeping the token secret and API key server-side", runDemo},
	{"dispatcher", "run a dispatcher: the HTTP API that stores and routes notifications", runDispatcher},
	{"gateway", "run a gateway: the WebSocket server that delivers users' notifications", runGateway},
	{"healthcheck", "GET a URL; exit 0 on a 2xx, 1 otherwise (container health checks)", runHealthcheck},
	{"listen", "connect as a user and print what arrives", runListen},
	{"nats", "run an embedded NATS server with JetStream (local use)", runNATS},
	{"notify", "send a notification to a user or a list of users, retried as the API allows", runNotify},
	{"ring", "show the ring the dispatchers and gateways build from Consul", runRing},
	{"token", "print a user token signed with the token secrets", runToken},
	{"stream", "show the log's stream, or change its settings (replicas, retention)", runStream},
	{"version", "print the version", func(context.Context, []string) error { fmt.Println("herald", version); return nil }},
}

func usage() {
	fmt.Fprintf(os.Stderr, "herald is a WebSocket push-notification gateway with sticky user routing.\n\nUsage: herald <command> [flags]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(os.Stderr, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(os.Stderr, "\nRun 'herald <command> --help' for a command's flags. Every flag can also be set\nfrom the environment: --consul-addr is HERALD_CONSUL_ADDR.\n")
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		os.Exit(2)
	}
	for _, c := range commands {
		if c.name != os.Args[1] {
			continue
		}
		sigs := make(chan os.Signal, 2)
		signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
		ctx, stop := context.WithCancel(context.Background())
		go func() {
			<-sigs
			stop()
			<-sigs
			close(hardStop)
		}()
		err := c.run(ctx, os.Args[2:])
		stop()
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "herald %s: %v\n", c.name, err)
			os.Exit(1)
		}
		return
	}
	fmt.Fprintf(os.Stderr, "herald: unknown command %q\n\n", os.Args[1])
	usage()
	os.Exit(2)
}
