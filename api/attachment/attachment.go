// Package attachment names a CNI attachment the way membrane-cni and the
// agent both do: its IPAM owner ("container-id:ifname") and its host-side
// veth. It is pure (no I/O, no hive, statedb or netlink) so the plugin and
// the agent share it without the plugin linking any agent library.
package attachment

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// HostVethPrefix starts the name of every host-side veth membrane-cni makes.
const HostVethPrefix = "mb"

// HostVethName is the host-side veth name of an attachment: "mb" and the
// first 13 hex digits of sha256("container-id:ifname"), 15 characters, the
// kernel's limit. It is a pure function of the attachment so DEL, GC and
// the agent find the interface without any state, even when the netns is
// gone.
func HostVethName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + ":" + ifName))
	return HostVethPrefix + hex.EncodeToString(sum[:])[:13]
}

// Attachment is one CNI attachment: a container's interface on this network.
type Attachment struct {
	ContainerID string
	IfName      string
}

// Owner is how the agent's IPAM records the attachment's addresses.
func (a Attachment) Owner() string { return a.ContainerID + ":" + a.IfName }

// EndpointID addresses the attachment's endpoint in the agent's API.
func (a Attachment) EndpointID() string { return "cni-attachment-id:" + a.Owner() }

// HostVeth is the attachment's host-side veth name.
func (a Attachment) HostVeth() string { return HostVethName(a.ContainerID, a.IfName) }

// ParseOwner turns an IPAM owner back into an attachment. Interface names
// cannot contain ':' so the last one separates the two.
func ParseOwner(owner string) (Attachment, bool) {
	i := strings.LastIndexByte(owner, ':')
	if i <= 0 || i == len(owner)-1 {
		return Attachment{}, false
	}
	return Attachment{ContainerID: owner[:i], IfName: owner[i+1:]}, true
}
