package plugin

import (
	"context"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
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
	ctx, cancel := context.WithTimeout(context.Background(), AddTimeout)
	defer cancel()
	res, err := Add(ctx, args)
	if err != nil {
		return toCNI(err)
	}
	return res.Print()
}

func CmdDel(args *skel.CmdArgs) error {
	ctx, cancel := context.WithTimeout(context.Background(), DelTimeout)
	defer cancel()
	return toCNI(Del(ctx, args))
}

func CmdCheck(args *skel.CmdArgs) error {
	ctx, cancel := context.WithTimeout(context.Background(), CheckTimeout)
	defer cancel()
	return toCNI(Check(ctx, args))
}

func CmdGC(args *skel.CmdArgs) error {
	ctx, cancel := context.WithTimeout(context.Background(), GCTimeout)
	defer cancel()
	return toCNI(GC(ctx, args))
}

func CmdStatus(args *skel.CmdArgs) error {
	ctx, cancel := context.WithTimeout(context.Background(), StatusTimeout)
	defer cancel()
	return toCNI(Status(ctx, args))
}
