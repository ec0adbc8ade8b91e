package api_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/membrane-net/membrane/policy/api"
)

// TestDocsExamples keeps docs/policy.md honest: every YAML and JSON
// policy example in its rule-language part parses, and the example marked
// "(refused)" is refused with exactly the problems the page shows; the
// YAML policies of its enforcement part parse.
func TestDocsExamples(t *testing.T) {
	data, err := os.ReadFile("../../docs/policy.md")
	if err != nil {
		t.Fatal(err)
	}
	doc, semantics, _ := strings.Cut(string(data), "## Enforcement semantics")
	blocks := regexp.MustCompile("(?s)```(yaml|json)\n(.*?)```").FindAllStringSubmatch(doc, -1)
	if len(blocks) < 5 {
		t.Fatalf("found %d examples in docs/policy.md", len(blocks))
	}
	refused := 0
	for _, b := range blocks {
		body := b[2]
		if strings.Contains(body, `"code": 400`) {
			continue // an API answer, not a policy
		}
		first, _, _ := strings.Cut(body, "\n")
		_, err := api.Parse([]byte(body))
		if !strings.Contains(first, "(refused)") {
			if err != nil {
				t.Errorf("docs/policy.md example does not parse: %v\n%s", err, body)
			}
			continue
		}
		refused++
		if err == nil {
			t.Errorf("docs/policy.md example marked refused is accepted:\n%s", body)
			continue
		}
		for _, line := range strings.Split(err.Error(), "\n") {
			if !strings.Contains(doc, line) {
				t.Errorf("docs/policy.md does not show the problem\n  %s", line)
			}
		}
	}
	if refused == 0 {
		t.Error("docs/policy.md has no refused example")
	}
	// The policies the enforcement part shows (how selectors are scoped)
	// parse too.
	for _, b := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(semantics, -1) {
		if _, err := api.Parse([]byte(b[1])); err != nil {
			t.Errorf("docs/policy.md example does not parse: %v\n%s", err, b[1])
		}
	}
}
