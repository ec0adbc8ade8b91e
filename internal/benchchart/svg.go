package benchchart

import (
	"fmt"
	"html"
	"io"
	"strings"
)

// Layout of the chart: two panels side by side (throughput, then the p50
// round trip), one horizontal bar per mode, the value and its ratio to
// ptp written after the bar. Skipped modes keep their row, with the
// reason instead of a bar.
const (
	panelWidth = 470
	labelWidth = 150 // mode names, left of the bars
	valueWidth = 150 // room right of the longest bar for its label
	rowHeight  = 26
	barHeight  = 16
	topMargin  = 58 // title and subtitle
	panelTitle = 22
	bottom     = 34 // footnote
)

// panel is one bar chart.
type panel struct {
	title string
	unit  string
	value func(Mode) float64
	// lowerIsBetter only changes the wording of the title.
	lowerIsBetter bool
	format        string
}

var panels = []panel{
	{title: "TCP throughput (iperf3, 1 stream)", unit: "Gbit/s", value: func(m Mode) float64 { return m.MedianGbps }, format: "%.1f"},
	{title: "TCP round trip p50 (sockperf, pinned)", unit: "µs", value: func(m Mode) float64 { return m.MedianRTTP50us },
		lowerIsBetter: true, format: "%.1f"},
}

// SVG writes the chart of d: hand-written SVG 1.1, no scripts, no external
// resources, so it renders the same on GitHub and in a browser.
func SVG(w io.Writer, d *Datapath) error {
	width := len(panels) * panelWidth
	height := topMargin + panelTitle + len(d.Modes)*rowHeight + bottom
	var sb strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&sb, format, args...) }

	p(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		width, height, width, height)
	p(`<rect x="0" y="0" width="%d" height="%d" fill="#ffffff"/>`+"\n", width, height)
	p(`<text x="10" y="22" font-size="16" font-weight="bold">%s</text>`+"\n",
		esc(fmt.Sprintf("Membrane datapath: pod to pod, medians of %d alternated rounds of %d s", d.Runs, d.Seconds)))
	p(`<text x="10" y="42" fill="#555555">%s</text>`+"\n", esc(subtitle(d)))

	ptp, hasPTP := d.Mode("ptp")
	for i, pn := range panels {
		x0 := i * panelWidth
		y0 := topMargin
		note := "higher is better"
		if pn.lowerIsBetter {
			note = "lower is better"
		}
		p(`<g class="panel" id="panel-%d">`+"\n", i)
		p(`<text x="%d" y="%d" font-weight="bold">%s</text>`+"\n", x0+10, y0+14, esc(pn.title+": "+note))
		max := 0.0
		for _, m := range d.Modes {
			if m.Measured() && pn.value(m) > max {
				max = pn.value(m)
			}
		}
		scale := 0.0
		if max > 0 {
			scale = float64(panelWidth-labelWidth-valueWidth) / max
		}
		for j, m := range d.Modes {
			y := y0 + panelTitle + j*rowHeight
			p(`<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", x0+labelWidth-8, y+barHeight-3, esc(m.Name))
			if !m.Measured() {
				p(`<text x="%d" y="%d" fill="#888888" font-style="italic" font-size="11">%s</text>`+"\n",
					x0+labelWidth, y+barHeight-3, esc(clip("not measured: "+shortReason(m.Skipped), 48)))
				continue
			}
			v := pn.value(m)
			bw := v * scale
			if bw < 1 {
				bw = 1
			}
			label := fmt.Sprintf(pn.format+" %s", v, pn.unit)
			if hasPTP && ptp.Measured() && m.Name != "ptp" && pn.value(ptp) > 0 {
				label += fmt.Sprintf(" (%.2fx ptp)", v/pn.value(ptp))
			}
			p(`<rect class="bar" data-mode="%s" x="%d" y="%d" width="%.1f" height="%d" fill="%s"><title>%s</title></rect>`+"\n",
				esc(m.Name), x0+labelWidth, y, bw, barHeight, color(m.Name), esc(m.Name+": "+label))
			p(`<text class="value" x="%.1f" y="%d">%s</text>`+"\n", float64(x0+labelWidth)+bw+5, y+barHeight-3, esc(label))
		}
		p("</g>\n")
	}
	p(`<text x="10" y="%d" fill="#555555" font-size="11">%s</text>`+"\n", height-12,
		esc("blue: Membrane (L4 policy enforced); grey: references. "+clip(d.Policy, 110)))
	p("</svg>\n")
	_, err := io.WriteString(w, sb.String())
	return err
}

func subtitle(d *Datapath) string {
	m := d.Machine
	parts := []string{}
	if m.CPUModel != "" {
		parts = append(parts, fmt.Sprintf("%d x %s", m.CPUs, m.CPUModel))
	}
	if m.Kernel != "" {
		parts = append(parts, "Linux "+m.Kernel)
	}
	if m.OS != "" {
		parts = append(parts, m.OS)
	}
	if d.Date != "" {
		parts = append(parts, d.Date)
	}
	return strings.Join(parts, ", ")
}

// color: Membrane's modes blue, the references grey.
func color(mode string) string {
	if strings.HasPrefix(mode, "membrane") {
		return "#2b6cb0"
	}
	return "#a0aec0"
}

func esc(s string) string { return html.EscapeString(s) }

// shortReason is a reason without its parenthesised detail.
func shortReason(s string) string {
	if short, _, ok := strings.Cut(s, " ("); ok {
		return short
	}
	return s
}

func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
