package plugin

import (
	"context"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/membrane-net/membrane/api/client"
)

// Deadlines of the commands' conversations with the agent. ADD waits for a
// sync build, which the agent bounds itself (it answers 504); this is the
// backstop for an agent that does not answer at all.
var (
	AddTimeout    = 2 * time.Minute
	DelTimeout    = 30 * time.Second
	CheckTimeout  = 30 * time.Second
	GCTimeout     = time.Minute
	StatusTimeout = 5 * time.Second
)

// About is printed when the plugin is run by hand, without CNI_COMMAND.
const About = "membrane-cni: attaches pods to the Membrane agent (CNI 0.1.0 - 1.1.0)"

// CmdAdd, CmdDel, CmdCheck, CmdGC and CmdStatus are the skel entry points:
// they run the command under its deadline, print ADD's result and turn
// errors into CNI errors with the right code.
func CmdAdd(args *skel.CmdArgs) error {
	return run(AddTimeout, args, func(ctx context.Context, args *skel.CmdArgs) error {
		res, err := Add(ctx, args)
		if err != nil {
			return err
		}
		return res.Print()
	})
}

func CmdDel(args *skel.CmdArgs) error    { return run(DelTimeout, args, Del) }
func CmdCheck(args *skel.CmdArgs) error  { return run(CheckTimeout, args, Check) }
func CmdGC(args *skel.CmdArgs) error     { return run(GCTimeout, args, GC) }
func CmdStatus(args *skel.CmdArgs) error { return run(StatusTimeout, args, Status) }

// run runs a command under its deadline and turns its error into the CNI
// error skel prints.
func run(timeout time.Duration, args *skel.CmdArgs, cmd func(context.Context, *skel.CmdArgs) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return toCNI(cmd(ctx, args))
}

// invocation is what every command starts from: the network configuration
// on stdin, the attachment the runtime names (CNI_CONTAINERID and
// CNI_IFNAME; empty for GC and STATUS) and a client of the agent the
// configuration names.
type invocation struct {
	conf   *NetConf
	att    Attachment
	client *client.Client
}

// confCheck is how much of the configuration a command checks.
type confCheck int

const (
	// validConf validates it (LoadConf): ADD, CHECK, STATUS. A
	// configuration that fails is ErrInvalidNetworkConfig.
	validConf confCheck = iota
	// decodedConf only decodes it (parseConf): DEL and GC, since a
	// configuration edited into something invalid since the ADD must not
	// keep the pod's resources alive. One that fails is ErrDecodingFailure.
	decodedConf
)

// begin reads a command's arguments. Its error carries the CNI code and
// no command name: the caller adds that if it wants.
func begin(args *skel.CmdArgs, check confCheck) (*invocation, error) {
	load, code := LoadConf, types.ErrInvalidNetworkConfig
	if check == decodedConf {
		load, code = parseConf, types.ErrDecodingFailure
	}
	conf, err := load(args.StdinData)
	if err != nil {
		return nil, withCode(code, err)
	}
	return &invocation{
		conf:   conf,
		att:    Attachment{ContainerID: args.ContainerID, IfName: args.IfName},
		client: client.New(conf.Socket),
	}, nil
}
