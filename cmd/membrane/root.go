package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/membrane-net/membrane/api/client"
)

// app is the state every command shares: global flags and the streams.
type app struct {
	socket  string
	output  string
	timeout time.Duration

	stdin          io.Reader
	stdout, stderr io.Writer
}

// Output formats of -o.
const (
	outputTable = "table"
	outputJSON  = "json"
	outputYAML  = "yaml"
)

// execute runs the CLI with args and returns the process exit code: 0 on
// success, 1 on any error (reported as one line on stderr).
func execute(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(stderr, "Error:", a.describe(err))
		return 1
	}
	return 0
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "membrane",
		Short: "Debug CLI for membrane-agent: endpoints, identities, pods, policy, statedb tables, BPF maps, monitor",
		Long: `membrane inspects and edits the state of the membrane-agent on this node.

Most commands talk to the agent's REST API over its unix socket (--socket,
default $MEMBRANE_SOCKET or ` + client.DefaultSocket + `). The "bpf" commands read
the pinned BPF maps directly and work while the agent is down.

Every listing prints an aligned table by default; -o json and -o yaml print
the agent's documents for scripts.`,
		Example: `  # Is the agent up, and are its cells healthy?
  membrane status

  # Which endpoints exist, in which state, with which identity?
  membrane endpoint list
  membrane endpoint list -o json | jq '.[] | {id, state, identity}'

  # Register pod labels before the CNI plugin creates the pod's endpoint.
  membrane pod apply -f pods.yaml

  # Query the agent's tables by index, follow one as it changes.
  membrane shell -- db/get -i ip endpoints 10.200.0.5
  membrane shell -- db/watch endpoints

  # What the datapath sees, straight from the pinned maps.
  membrane bpf ipcache list

  # What the datapath drops, as it happens.
  membrane monitor --type drop`,
		SilenceUsage:      true,
		SilenceErrors:     true,
		PersistentPreRunE: func(*cobra.Command, []string) error { return a.checkGlobalFlags() },
		RunE:              func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}

	pf := root.PersistentFlags()
	pf.StringVar(&a.socket, "socket", client.SocketFromEnv(),
		"Unix socket of the agent's API ($MEMBRANE_SOCKET sets the default)")
	pf.StringVarP(&a.output, "output", "o", outputTable, "Output format: table, json or yaml")
	pf.DurationVar(&a.timeout, "timeout", 30*time.Second, "Give up on the agent after this long")

	root.AddCommand(
		a.statusCommand(),
		a.endpointCommand(),
		a.identityCommand(),
		a.podCommand(),
		a.ipamCommand(),
		a.nodeCommand(),
		a.statedbCommand(),
		a.shellCommand(),
		a.bpfCommand(),
		a.policyCommand(),
		a.monitorCommand(),
	)
	a.addCompletionExamples(root)
	return root
}

// addCompletionExamples adds cobra's "completion" command (bash, zsh,
// fish, powershell; docs/operations.md says where its script goes) now
// rather than at Execute, to give it and its subcommands examples.
func (a *app) addCompletionExamples(root *cobra.Command) {
	// The completion commands take their output stream now.
	root.SetOut(a.stdout)
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() != "completion" {
			continue
		}
		c.Example = `  # Completion in this bash session, then for good.
  source <(membrane completion bash)
  membrane completion bash > /etc/bash_completion.d/membrane

  # zsh, fish
  membrane completion zsh > "${fpath[1]}/_membrane"
  membrane completion fish > ~/.config/fish/completions/membrane.fish`
		for _, sh := range c.Commands() {
			sh.Example = "  membrane completion " + sh.Name() + " --help  # where the script goes\n" +
				"  membrane completion " + sh.Name() + " > membrane." + sh.Name()
		}
	}
}

func (a *app) checkGlobalFlags() error {
	switch a.output {
	case outputTable, outputJSON, outputYAML:
	default:
		return fmt.Errorf("invalid --output %q: want table, json or yaml", a.output)
	}
	if a.socket == "" {
		return errors.New("--socket must not be empty")
	}
	if a.timeout <= 0 {
		return fmt.Errorf("invalid --timeout %s: must be positive", a.timeout)
	}
	return nil
}

// groupCommand is a command that only holds subcommands: alone it prints
// its help, with an argument it names the unknown subcommand.
func groupCommand(use, short, long, example string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use:     use,
		Short:   short,
		Long:    long,
		Example: example,
		Args:    cobra.NoArgs,
		RunE:    func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	c.AddCommand(subs...)
	return c
}

// client returns an API client and a context bounded by --timeout.
func (a *app) client(cmd *cobra.Command) (*client.Client, context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(cmd.Context(), a.timeout)
	return client.New(a.socket), ctx, cancel
}

// describe turns an error into the one line an operator reads: it says
// what failed and, where it can, what to do about it.
func (a *app) describe(err error) string {
	var msg string
	var ae *client.APIError
	switch {
	case errors.Is(err, client.ErrAgentUnreachable):
		msg = fmt.Sprintf("cannot reach membrane-agent at %s: %s; is the agent running? (--socket or $MEMBRANE_SOCKET select another socket)",
			a.socket, dialFailure(a.socket))
	case errors.Is(err, context.DeadlineExceeded):
		msg = fmt.Sprintf("%v (the agent at %s did not answer within --timeout=%s)", err, a.socket, a.timeout)
	case errors.Is(err, context.Canceled):
		msg = "interrupted"
	case errors.As(err, &ae) && ae.Code == 404 && strings.HasPrefix(ae.Message, "no route for"):
		msg = fmt.Sprintf("%v (this membrane-agent does not serve the route: is it an older version, or a custom agent without that cell?)", err)
	default:
		msg = err.Error()
	}
	return oneLine(msg)
}

// dialFailure says why the socket refuses connections.
func dialFailure(socket string) string {
	c, err := net.DialTimeout("unix", socket, time.Second)
	if err == nil {
		c.Close()
		return "the connection failed (the socket accepts connections now: try again)"
	}
	var se *os.SyscallError
	if errors.As(err, &se) {
		switch {
		case errors.Is(se.Err, syscall.ENOENT):
			return "no such socket"
		case errors.Is(se.Err, syscall.ECONNREFUSED):
			return "connection refused (stale socket?)"
		case errors.Is(se.Err, syscall.EACCES):
			return "permission denied (run as root or as a member of the socket's group)"
		}
		return se.Err.Error()
	}
	return err.Error()
}

// oneLine folds a multi-line message into a single line.
func oneLine(s string) string {
	var parts []string
	for l := range strings.Lines(s) {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, " ")
}
