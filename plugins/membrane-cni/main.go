// membrane-cni is Membrane's CNI plugin. The runtime executes it once per
// pod attachment; the work is in package plugin, where tests call it.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/membrane-net/membrane/plugins/membrane-cni/plugin"
)

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    plugin.CmdAdd,
		Del:    plugin.CmdDel,
		Check:  plugin.CmdCheck,
		GC:     plugin.CmdGC,
		Status: plugin.CmdStatus,
	}, version.All, plugin.About)
}
