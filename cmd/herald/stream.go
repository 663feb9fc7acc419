package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/heraldpush/herald/gateway/inbox"
)

// streamFlags defines the flags of the log's stream settings in c, for
// herald dispatcher and herald stream apply alike. Each defaults to unset,
// which is the live stream's value (or the default when the stream is
// created): a dispatcher started without them adopts the stream as it is,
// and one started with a value the stream has otherwise refuses to start.
// Only herald stream apply changes a live stream.
func streamFlags(fs *flagSet, c *inbox.Config) {
	fs.IntVar(&c.Replicas, "replicas", 0, "stream replicas: 1 locally, 3 in production (default: the stream's, or 1 when creating it)")
	fs.Int64Var(&c.MaxMsgsPerUser, "max-per-user", 0, "messages kept per user; negative: no limit (default: the stream's, or 100 when creating it)")
	fs.DurationVar(&c.MaxAge, "max-age", 0, "how long messages are kept; negative: no limit (default: the stream's, or 168h when creating it)")
	fs.Int64Var(&c.MaxBytes, "max-bytes", 0, "bound of the whole log in bytes, oldest dropped first; negative: no limit (default: the stream's, or unlimited when creating it)")
	fs.Var((*int32Value)(&c.MaxMsgSize), "max-msg-size", "largest message the stream stores, payload and headers, in `bytes`; negative: no limit (default: the stream's, or 69632, or what --max-payload needs if more, when creating it)")
	fs.DurationVar(&c.Duplicates, "dedupe-window", 0, "how long an idempotency key is remembered (default: the stream's, or 2m when creating it)")
	fs.StringVar(&c.Storage, "storage", "", "file or memory; a live stream's cannot change (default: the stream's, or file when creating it)")
}

// int32Value is a flag.Value of an int32.
type int32Value int32

func (v *int32Value) String() string { return strconv.FormatInt(int64(*v), 10) }

func (v *int32Value) Set(s string) error {
	n, err := strconv.ParseInt(s, 0, 32)
	if err != nil {
		return err
	}
	*v = int32Value(n)
	return nil
}

const streamUsage = `Usage: herald stream <apply|show> [flags]

  apply  create the log's stream, or change the settings given as flags
         (printing each one's old and new value); settings not given stay
         as they are
  show   print the live stream's settings, epoch and state

Dispatchers never change a live stream's settings: one started with a
setting the stream has otherwise refuses to start. Change them here.
Run 'herald stream <apply|show> --help' for the flags.
`

// runStream is herald stream: the one place an operator changes the log's
// stream (apply), and sees it (show).
func runStream(ctx context.Context, args []string) error {
	if len(args) == 0 || (args[0] != "apply" && args[0] != "show") {
		fmt.Fprint(os.Stderr, streamUsage)
		switch {
		case len(args) == 0:
			return errors.New("no subcommand: apply or show")
		case args[0] == "-h" || args[0] == "--help" || args[0] == "help":
			return flag.ErrHelp
		}
		return fmt.Errorf("unknown subcommand %q: apply or show", args[0])
	}
	apply := args[0] == "apply"
	synopsis := "Print the live settings, epoch and state of the log's stream."
	if apply {
		synopsis = "Create the log's stream, or change the settings given as flags, printing each one's old and new value. Settings not given stay as they are, and so does the epoch."
	}
	fs := newFlagSet("stream "+args[0], synopsis)
	var c common
	c.register(fs)
	var cfg inbox.Config
	fs.StringVar(&cfg.Stream, "stream", "", "JetStream stream of the users' logs (default: the deployment's, HERALD_INBOX without one)")
	if apply {
		streamFlags(fs, &cfg)
	}
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for NATS to answer")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	deployment, err := c.deploymentName()
	if err != nil {
		return err
	}
	cfg.Deployment = deployment
	cfg.Stream = cmp.Or(cfg.Stream, deployment.Stream())
	if err := cfg.Validate(); err != nil {
		return err
	}
	log, err := c.logger("stream")
	if err != nil {
		return err
	}
	nc, err := c.connectNATS("herald stream "+args[0], log)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if !apply {
		st, err := inbox.Show(ctx, nc, cfg)
		if err != nil {
			return fmt.Errorf("%w (NATS at %s)", err, c.natsURL)
		}
		printStatus(os.Stdout, cfg.Stream, st)
		return nil
	}
	a, err := inbox.Apply(ctx, nc, cfg)
	if err != nil {
		return fmt.Errorf("%w (NATS at %s)", err, c.natsURL)
	}
	printApplied(os.Stdout, cfg.Stream, a)
	return nil
}

func printApplied(w io.Writer, stream string, a inbox.Applied) {
	switch {
	case a.Created:
		fmt.Fprintf(w, "stream %s created, epoch %s:\n", stream, a.Epoch)
		for _, s := range a.Settings {
			fmt.Fprintf(w, "  %-14s %s\n", s.Name, s.Value)
		}
	case len(a.Changes) == 0:
		fmt.Fprintf(w, "stream %s already has these settings; nothing was written (epoch %s)\n", stream, a.Epoch)
	default:
		fmt.Fprintf(w, "stream %s changed, epoch %s kept:\n", stream, a.Epoch)
		for _, d := range a.Changes {
			fmt.Fprintf(w, "  %-14s %s -> %s\n", d.Setting, d.Live, d.Want)
		}
	}
}

func printStatus(w io.Writer, stream string, st inbox.Status) {
	fmt.Fprintf(w, "stream %s\n  %-14s %s\n", stream, "epoch", st.Epoch)
	for _, s := range st.Settings {
		fmt.Fprintf(w, "  %-14s %s\n", s.Name, s.Value)
	}
	state := st.Info.State
	fmt.Fprintf(w, "  %-14s %d (%d bytes, seqs %d to %d)\n", "messages", state.Msgs, state.Bytes, state.FirstSeq, state.LastSeq)
	if cl := st.Info.Cluster; cl != nil {
		fmt.Fprintf(w, "  %-14s %s\n", "leader", cl.Leader)
		for _, r := range cl.Replicas {
			status := "current"
			switch {
			case r.Offline:
				status = "offline"
			case !r.Current:
				status = "catching up"
			}
			fmt.Fprintf(w, "  %-14s %s %s, lag %d, seen %v ago\n", "replica", r.Name, status, r.Lag, r.Active.Round(time.Millisecond))
		}
	}
}
