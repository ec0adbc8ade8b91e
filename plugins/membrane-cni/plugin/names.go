package plugin

import att "github.com/membrane-net/membrane/api/attachment"

// The attachment's names live in api/attachment, shared with the agent
// (which finds the host veth of an IPAM owner at start); these keep the
// plugin's callers unchanged.

// HostVethPrefix starts the name of every host-side veth membrane-cni makes.
const HostVethPrefix = att.HostVethPrefix

// HostVethName is the host-side veth name of an attachment (see
// attachment.HostVethName).
func HostVethName(containerID, ifName string) string {
	return att.HostVethName(containerID, ifName)
}

// Attachment is one CNI attachment: a container's interface on this network.
type Attachment = att.Attachment

// ParseOwner turns an IPAM owner back into an attachment.
func ParseOwner(owner string) (Attachment, bool) { return att.ParseOwner(owner) }
