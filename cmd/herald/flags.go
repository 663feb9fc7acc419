package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// flagSet is a subcommand's flags. Each flag is also read from the
// environment: from HERALD_<NAME> (--consul-addr from HERALD_CONSUL_ADDR),
// or from the variable named with envVar.
type flagSet struct {
	*flag.FlagSet
	envVars map[string]string // flag name → its own environment variable
}

// newFlagSet returns a flag set for a subcommand whose usage mentions the
// environment variables.
func newFlagSet(name, synopsis string) *flagSet {
	fs := &flagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), envVars: map[string]string{}}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: herald %s [flags]\n\n%s\n\n"+
			"Flags (each also read from HERALD_<NAME>, e.g. --consul-addr from HERALD_CONSUL_ADDR,\n"+
			"unless its description names another variable; the command line wins):\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// envVar makes flag name read the environment variable variable instead of
// HERALD_<NAME>, and says so in its usage. It is for flags several
// components have whose values must differ when they share a host
// (--admin-listen: HERALD_DISPATCHER_ADMIN_LISTEN, HERALD_GATEWAY_ADMIN_LISTEN),
// so one exported variable cannot configure both. Call it right after
// defining the flag; it panics if there is no such flag, as defining one
// twice does.
func (fs *flagSet) envVar(name, variable string) {
	f := fs.Lookup(name)
	if f == nil {
		panic("herald: envVar of undefined flag --" + name)
	}
	fs.envVars[name] = variable
	f.Usage += " (environment: " + variable + ")"
}

// envOf is the environment variable flag name is read from.
func (fs *flagSet) envOf(name string) string {
	if v, ok := fs.envVars[name]; ok {
		return v
	}
	return envName(name)
}

// parse parses args, then sets every flag not given on the command line from
// its environment variable, so the command line wins over the environment.
func parse(fs *flagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		name := fs.envOf(f.Name)
		if v, ok := os.LookupEnv(name); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", name, v, e)
			}
		}
	})
	return err
}

// envName is the environment variable for a flag: consul-addr → HERALD_CONSUL_ADDR.
func envName(flagName string) string {
	return "HERALD_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// splitList splits a comma-separated flag value, trimming spaces and
// dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// valueOrFile is the value of flag --name, given either inline or, for a
// mounted secret, as the contents of --name-file (surrounding whitespace
// ignored, at most 64 KiB); "" if neither is given. Both at once, or an
// empty file, is an error.
func valueOrFile(name, value, file string) (string, error) {
	switch {
	case value != "" && file != "":
		return "", fmt.Errorf("--%s and --%s-file: give one", name, name)
	case file == "":
		return value, nil
	}
	f, err := os.Open(file)
	if err != nil {
		return "", fmt.Errorf("--%s-file: %w", name, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return "", fmt.Errorf("--%s-file: %w", name, err)
	}
	if value = strings.TrimSpace(string(b)); value == "" {
		return "", fmt.Errorf("--%s-file %s is empty", name, file)
	}
	return value, nil
}

// splitListOrFile is splitList of --name or of --name-file's contents, in
// which newlines separate items as commas do.
func splitListOrFile(name, value, file string) ([]string, error) {
	v, err := valueOrFile(name, value, file)
	return splitList(strings.ReplaceAll(v, "\n", ",")), err
}
