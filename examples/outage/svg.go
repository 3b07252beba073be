package main

import (
	"fmt"
	"html"
	"math"
	"os"
	"strings"
)

// Chart geometry, in SVG user units.
const (
	svgW, svgH                         = 960, 480
	padL, padR, padT, padB             = 80, 30, 95, 60
	plotW, plotH                       = svgW - padL - padR, svgH - padT - padB
	colorTextbook, colorCacheaside     = "#d62728", "#1f77b4"
	colorOutageBand, colorWarmingBand  = "#fbe3e3", "#eeeeee"
	colorGrid, colorAxis, colorCaption = "#dddddd", "#333333", "#555555"
)

// writeSVG draws the DB queries per second of each strategy over the run,
// with the outage shaded, and writes it to path.
func writeSVG(path string, res *Result) error {
	return os.WriteFile(path, []byte(renderSVG(res)), 0o644)
}

func renderSVG(res *Result) string {
	p := res.Params
	total := p.WarmS + p.HealthyS + p.OutageS + p.RecoveryS
	peak := 1.0
	for _, s := range res.Strategies {
		for _, sec := range s.Timeline {
			peak = max(peak, float64(sec.DBQueries))
		}
	}
	step := niceStep(peak / 5)
	top := math.Ceil(peak/step) * step
	x := func(t float64) float64 { return padL + t/float64(max(total, 1))*plotW }
	y := func(v float64) float64 { return padT + plotH - v/top*plotH }

	var b strings.Builder
	f := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	f(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="Helvetica, Arial, sans-serif" font-size="13">`+"\n", svgW, svgH, svgW, svgH)
	f(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	f(`<text x="%d" y="28" font-size="18" font-weight="bold">Database queries per second during a Redis outage</text>`+"\n", padL)
	f(`<text x="%d" y="50" fill="%s">%d instances per strategy, %.0f req/s each, %d keys (Zipf), Redis killed for %ds then restarted empty</text>`+"\n",
		padL, colorCaption, p.Instances, p.Rate, p.Keys, p.OutageS)

	// Phase bands, drawn under the grid and the lines.
	band := func(from, to int, color, label string) {
		if to <= from {
			return
		}
		f(`<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", x(float64(from)), padT, x(float64(to))-x(float64(from)), plotH, color)
		f(`<text x="%.1f" y="%d" text-anchor="middle" fill="%s">%s</text>`+"\n", (x(float64(from))+x(float64(to)))/2, padT+16, colorCaption, html.EscapeString(label))
	}
	kill := p.WarmS + p.HealthyS
	band(0, p.WarmS, colorWarmingBand, "warming")
	band(kill, kill+p.OutageS, colorOutageBand, "Redis down")
	f(`<text x="%.1f" y="%d" text-anchor="middle" fill="%s">healthy</text>`+"\n", (x(float64(p.WarmS))+x(float64(kill)))/2, padT+16, colorCaption)
	f(`<text x="%.1f" y="%d" text-anchor="middle" fill="%s">restarted empty</text>`+"\n", (x(float64(kill+p.OutageS))+x(float64(total)))/2, padT+16, colorCaption)

	// Grid and y axis labels.
	for v := 0.0; v <= top+step/2; v += step {
		f(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s"/>`+"\n", padL, y(v), padL+plotW, y(v), colorGrid)
		f(`<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", padL-8, y(v), fmtCount(v))
	}
	// x axis ticks every few seconds.
	xstep := max(1, int(niceStep(float64(total)/12)))
	for t := 0; t <= total; t += xstep {
		f(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s"/>`+"\n", x(float64(t)), padT+plotH, x(float64(t)), padT+plotH+5, colorAxis)
		f(`<text x="%.1f" y="%d" text-anchor="middle">%d</text>`+"\n", x(float64(t)), padT+plotH+20, t)
	}
	f(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s"/>`+"\n", padL, padT+plotH, padL+plotW, padT+plotH, colorAxis)
	f(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s"/>`+"\n", padL, padT, padL, padT+plotH, colorAxis)
	f(`<text x="%d" y="%d" text-anchor="middle">seconds since start</text>`+"\n", padL+plotW/2, svgH-15)
	f(`<text transform="translate(22 %d) rotate(-90)" text-anchor="middle">DB queries / s</text>`+"\n", padT+plotH/2)

	// One line per strategy, a point at the middle of each second. The
	// first strategy is drawn widest, so that it shows where the lines
	// overlap.
	colors := map[string]string{"textbook": colorTextbook, "cacheaside": colorCacheaside}
	for i, s := range res.Strategies {
		var pts []string
		for _, sec := range s.Timeline {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(float64(sec.T)+0.5), y(float64(sec.DBQueries))))
		}
		f(`<polyline fill="none" stroke="%s" stroke-width="%.1f" stroke-linejoin="round" points="%s"/>`+"\n", colors[s.Name], 4.5-2*float64(min(i, 1)), strings.Join(pts, " "))
	}

	// Legend, in one row between the caption and the plot.
	lx := padL
	for _, s := range res.Strategies {
		label := fmt.Sprintf("%s: outage avg %s q/s", s.Name, fmtCount(s.Summary.OutageDBQPS))
		f(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/>`+"\n", lx, padT-14, lx+28, padT-14, colors[s.Name])
		f(`<text x="%d" y="%d" dominant-baseline="middle">%s</text>`+"\n", lx+36, padT-14, html.EscapeString(label))
		lx += 60 + 8*len(label)
	}
	f("</svg>\n")
	return b.String()
}

// niceStep rounds v up to 1, 2 or 5 times a power of ten.
func niceStep(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// fmtCount prints a tick or average: whole numbers without decimals.
func fmtCount(v float64) string {
	if v >= 10 || v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}
