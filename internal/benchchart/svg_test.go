package benchchart

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
)

// TestSVG charts the sample results and parses the chart back: well-formed
// XML, an svg root, per panel one bar per measured mode (in the order of
// the results) with its value written next to it, and the skipped mode
// named with its reason instead of a bar.
func TestSVG(t *testing.T) {
	d, err := ReadFile(filepath.Join("testdata", "datapath.json"))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := SVG(&buf, d); err != nil {
		t.Fatal(err)
	}

	dec := xml.NewDecoder(&buf)
	var root string
	bars := map[string][]string{} // panel id -> modes of its bars
	var texts []string
	var panel string
	depth := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("the chart is not well-formed XML: %v\n%s", err, buf.String())
		}
		switch el := tok.(type) {
		case xml.StartElement:
			depth++
			if depth == 1 {
				root = el.Name.Local
			}
			attr := func(name string) string {
				for _, a := range el.Attr {
					if a.Name.Local == name {
						return a.Value
					}
				}
				return ""
			}
			if el.Name.Local == "g" && attr("class") == "panel" {
				panel = attr("id")
			}
			if el.Name.Local == "rect" && attr("class") == "bar" {
				bars[panel] = append(bars[panel], attr("data-mode"))
			}
		case xml.EndElement:
			depth--
		case xml.CharData:
			texts = append(texts, string(el))
		}
	}
	if root != "svg" {
		t.Fatalf("root element %q, want svg", root)
	}
	want := []string{"ptp", "veth", "loopback", "membrane"} // membrane-netkit is skipped
	if len(bars) != len(panels) {
		t.Fatalf("bars in %d panels, want %d: %v", len(bars), len(panels), bars)
	}
	for id, modes := range bars {
		if strings.Join(modes, " ") != strings.Join(want, " ") {
			t.Errorf("%s: bars for %v, want one per measured mode %v", id, modes, want)
		}
	}
	all := strings.Join(texts, "\n")
	for _, s := range []string{
		"11.0 Gbit/s", "14.0 Gbit/s (1.27x ptp)", "41.0 Gbit/s (3.73x ptp)", // throughput values and ratios
		"32.0 µs", "28.0 µs (0.88x ptp)", // latency
		"not measured: agent has no --device-mode flag",
		"Test CPU <2 GHz> & co", // escaped on the way in, read back as written
	} {
		if !strings.Contains(all, s) {
			t.Errorf("the chart does not say %q; its text:\n%s", s, all)
		}
	}
}

func TestReadRejects(t *testing.T) {
	for name, doc := range map[string]string{
		"other benchmark": `{"benchmark":"cni","modes":[{"name":"ptp"}]}`,
		"no modes":        `{"benchmark":"datapath"}`,
		"not json":        `Gbit/s`,
	} {
		if _, err := Read(strings.NewReader(doc)); err == nil {
			t.Errorf("%s: read without an error", name)
		}
	}
}
