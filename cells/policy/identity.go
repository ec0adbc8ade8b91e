package policy

import (
	"net/netip"
	"strings"

	"github.com/membrane-net/membrane/labels"
	"github.com/membrane-net/membrane/statedb/tables"
)

// identityKind says which range an identity is from; selectors of
// different kinds look at different ranges.
type identityKind uint8

const (
	kindReserved identityKind = iota + 1 // 1..255: host, world, ...
	kindCluster                          // 256..: endpoints' label sets
	kindCIDR                             // LocalIdentityFlag | n: CIDR peers of rules
)

// kindOf classifies an identity by its number.
func kindOf(id tables.NumericIdentity) identityKind {
	switch {
	case id&tables.LocalIdentityFlag != 0:
		return kindCIDR
	case id < tables.MinClusterIdentity:
		return kindReserved
	}
	return kindCluster
}

// identityInfo is what selectors look at: an identity's number, labels
// and, for a CIDR identity, its prefix.
type identityInfo struct {
	id     tables.NumericIdentity
	kind   identityKind
	labels labels.Labels
	prefix netip.Prefix // kindCIDR only
}

func identityFromRow(row *tables.Identity) *identityInfo {
	return &identityInfo{id: row.ID, kind: kindOf(row.ID), labels: row.Labels}
}

func cidrIdentity(id tables.NumericIdentity, p netip.Prefix) *identityInfo {
	return &identityInfo{id: id, kind: kindCIDR, labels: cidrLabels(p), prefix: p}
}

// same reports whether two infos describe the same identity, so a row
// rewritten with the same content changes no selection.
func (i *identityInfo) same(o *identityInfo) bool {
	return i.id == o.id && i.kind == o.kind && i.prefix == o.prefix && i.labels.Equal(o.labels)
}

// cidrLabels are the labels a CIDR identity is published with:
// cidr:PREFIX, with an IPv6 prefix's ':' written '-' so that it is a
// valid label key (as Cilium does).
func cidrLabels(p netip.Prefix) labels.Labels {
	return labels.New(labels.Label{Source: labels.SourceCIDR, Key: strings.ReplaceAll(p.String(), ":", "-")})
}
