package policy

import (
	"fmt"

	"github.com/spf13/pflag"
)

// Policy enforcement modes (--enable-policy), as Cilium's.
const (
	// EnforcementDefault enforces a direction of an endpoint once a rule
	// selecting it has a section for that direction.
	EnforcementDefault = "default"
	// EnforcementAlways enforces both directions of every endpoint, even
	// with no rule: what no rule allows is dropped.
	EnforcementAlways = "always"
	// EnforcementNever enforces nothing: every endpoint allows all.
	EnforcementNever = "never"
)

// Localhost modes (--allow-localhost).
const (
	// AllowLocalhostAlways lets the node itself (identity host) into every
	// endpoint, whatever the rules say (short of a deny rule): kubelet
	// probes keep working under default deny, as with Cilium in Kubernetes.
	AllowLocalhostAlways = "always"
	// AllowLocalhostPolicy subjects the host to policy like any peer.
	AllowLocalhostPolicy = "policy"
)

// Config of the policy engine.
type Config struct {
	EnablePolicy   string
	AllowLocalhost string
}

// DefaultConfig is Cilium's default.
var DefaultConfig = Config{EnablePolicy: EnforcementDefault, AllowLocalhost: AllowLocalhostAlways}

func (def Config) Flags(fs *pflag.FlagSet) {
	fs.String("enable-policy", def.EnablePolicy,
		"Policy enforcement: 'default' enforces a direction of an endpoint once a rule selecting it has a section for it, "+
			"'always' enforces both directions of every endpoint (default deny even without rules), 'never' enforces nothing")
	fs.String("allow-localhost", def.AllowLocalhost,
		"Traffic from the node itself into endpoints: 'always' allows it on every enforced endpoint (unless a deny rule matches), "+
			"'policy' subjects it to policy like any peer")
}

// Validate reports a flag value the engine does not know, naming the flag.
func (c Config) Validate() error {
	switch c.EnablePolicy {
	case EnforcementDefault, EnforcementAlways, EnforcementNever:
	default:
		return fmt.Errorf("--enable-policy=%q: want %q, %q or %q", c.EnablePolicy, EnforcementDefault, EnforcementAlways, EnforcementNever)
	}
	switch c.AllowLocalhost {
	case AllowLocalhostAlways, AllowLocalhostPolicy:
	default:
		return fmt.Errorf("--allow-localhost=%q: want %q or %q", c.AllowLocalhost, AllowLocalhostAlways, AllowLocalhostPolicy)
	}
	return nil
}
