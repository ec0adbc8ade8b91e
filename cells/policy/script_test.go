package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/hive"
	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/hivetest"
	"github.com/cilium/hive/script"
	"github.com/cilium/hive/script/scripttest"
	"github.com/spf13/pflag"

	"github.com/membrane-net/membrane/api/models"
	policyapi "github.com/membrane-net/membrane/policy/api"
	"github.com/membrane-net/membrane/statedb/tables"
)

// TestScript replays testdata/*.txtar: rules, identities and endpoints
// rows go in (as the repository, the identity allocator and the endpoint
// manager write them), endpoint-policy, ipcache and identities rows come
// out. A "#! --flag=value" first line sets the engine's flags. The
// policy-rules table starts with a pending initializer, as while the
// repository restores rules: `policy/rules restored` completes it.
func TestScript(t *testing.T) {
	scripttest.Test(t, context.Background(),
		func(t testing.TB, args []string) *script.Engine {
			var e *testEngine
			e = newTestEngine(t, Config{}, true,
				cell.Provide(func() hive.ScriptCmdsOut { return hive.NewScriptCmds(scriptCmds(func() *testEngine { return e })) }))
			fs := pflag.NewFlagSet("", pflag.ContinueOnError)
			e.h.RegisterFlags(fs)
			if err := fs.Parse(args); err != nil {
				t.Fatal(err)
			}
			log := hivetest.Logger(t)
			cmds, err := e.h.ScriptCommands(log)
			if err != nil {
				t.Fatal(err)
			}
			maps.Insert(cmds, maps.All(script.DefaultCmds()))
			t.Cleanup(func() { e.h.Stop(log, context.Background()) })
			return &script.Engine{Cmds: cmds}
		}, []string{}, "testdata/*.txtar")
}

func scriptCmds(engine func() *testEngine) map[string]script.Cmd {
	return map[string]script.Cmd{
		"policy/synced": script.Command(
			script.CmdUsage{Summary: "wait until the policy engine has processed every change made so far"},
			func(s *script.State, args ...string) (script.WaitFunc, error) {
				e := engine()
				ctx, cancel := context.WithTimeout(s.Context(), time.Minute)
				defer cancel()
				return nil, e.c.progress.wait(ctx, e.c.inputRevisions(e.db.ReadTxn()))
			}),
		"policy/rules": script.Command(
			script.CmdUsage{
				Summary: "write the policy-rules table as the repository would",
				Args:    "insert FILE.json | import REVISION FILE | delete KEY... | restored",
				Detail: []string{
					"insert: FILE holds a JSON list of rows: {key, revision, namespace, rule} with the",
					"rule in Cilium's format. import: FILE is a policy document as PUT /v1/policy takes",
					"it (rules, CNP, CCNP, NetworkPolicy), parsed as the repository parses it into rows",
					"REVISION/0, REVISION/1, ... restored: the repository has restored its rules.",
				},
			},
			func(s *script.State, args ...string) (script.WaitFunc, error) {
				e := engine()
				if len(args) == 0 {
					return nil, script.ErrUsage
				}
				wtxn := e.db.WriteTxn(e.rules)
				defer wtxn.Abort()
				switch args[0] {
				case "insert":
					for _, f := range args[1:] {
						data, err := os.ReadFile(s.Path(f))
						if err != nil {
							return nil, err
						}
						var rows []*tables.PolicyRule
						if err := json.Unmarshal(data, &rows); err != nil {
							return nil, fmt.Errorf("%s: %w", f, err)
						}
						for _, r := range rows {
							if _, _, err := e.rules.Insert(wtxn, r); err != nil {
								return nil, err
							}
						}
					}
				case "import":
					if len(args) != 3 {
						return nil, script.ErrUsage
					}
					rev, err := strconv.ParseUint(args[1], 10, 64)
					if err != nil {
						return nil, err
					}
					data, err := os.ReadFile(s.Path(args[2]))
					if err != nil {
						return nil, err
					}
					parsed, err := policyapi.Parse(data)
					if err != nil {
						return nil, fmt.Errorf("%s: %w", args[2], err)
					}
					for i, pr := range parsed {
						row := &tables.PolicyRule{Key: fmt.Sprintf("%d/%d", rev, i), Revision: rev, Rule: pr.Rule,
							Namespace: pr.Namespace, Clusterwide: pr.Clusterwide(), Labels: pr.Labels}
						if _, _, err := e.rules.Insert(wtxn, row); err != nil {
							return nil, err
						}
					}
				case "delete":
					for _, k := range args[1:] {
						if _, _, err := e.rules.Delete(wtxn, &tables.PolicyRule{Key: k}); err != nil {
							return nil, err
						}
					}
				case "restored":
					e.rulesRestored(wtxn)
				default:
					return nil, script.ErrUsage
				}
				wtxn.Commit()
				return nil, nil
			}),
		"policy/show": script.Command(
			script.CmdUsage{Summary: "print every endpoint's computed policy, entries included"},
			func(s *script.State, args ...string) (script.WaitFunc, error) {
				e := engine()
				var b strings.Builder
				for row := range e.policy.All(e.db.ReadTxn()) {
					enf := func(on bool) string {
						if on {
							return "enforced"
						}
						return "allow-all"
					}
					fmt.Fprintf(&b, "endpoint %d: identity %d, revision %d, ingress %s, egress %s\n",
						row.EndpointID, row.Identity, row.Revision, enf(row.IngressEnforced), enf(row.EgressEnforced))
					for _, en := range row.Entries {
						fmt.Fprintf(&b, "  %s %s (%s)\n", verdictWord(en.Deny), en.Key, strings.Join(en.RuleKeys, " "))
					}
				}
				out := b.String()
				return func(*script.State) (string, string, error) { return out, "", nil }, nil
			}),
		"policy/trace": script.Command(
			script.CmdUsage{
				Summary: "trace a flow (POST /v1/policy/trace): verdict, reason, deciding rules",
				Args:    "SRC-LABELS DST-LABELS PORT[/PROTOCOL]",
				Detail:  []string{"Labels are comma-separated (k8s:app=web,k8s:io.kubernetes.pod.namespace=prod) or cidr:ADDRESS."},
			},
			func(s *script.State, args ...string) (script.WaitFunc, error) {
				if len(args) != 3 {
					return nil, script.ErrUsage
				}
				port, proto, _ := strings.Cut(args[2], "/")
				n, err := strconv.ParseUint(port, 10, 16)
				if err != nil {
					return nil, err
				}
				e := engine()
				t := &tracer{c: e.c, rules: e.rules, identities: e.identities, endpoints: e.endpoints}
				resp, err := t.trace(models.PolicyTraceRequest{SrcLabels: strings.Split(args[0], ","), DstLabels: strings.Split(args[1], ","), Dport: uint16(n), Protocol: proto})
				if err != nil {
					return nil, err
				}
				out := fmt.Sprintf("verdict: %s\nreason: %s\nrules: %s\n", resp.Verdict, resp.Reason, strings.Join(traceRuleKeys(resp), " "))
				return func(*script.State) (string, string, error) { return out, "", nil }, nil
			}),
	}
}
