package inspect

import (
	"encoding/json"
	"html/template"
	"maps"
	"net/http"
	"slices"
)

// write sends rep as JSON or HTML, as r asks.
func (h *Handler[K]) write(w http.ResponseWriter, r *http.Request, status int, rep Report) {
	w.Header().Set("Cache-Control", "no-store")
	if wantsJSON(r) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(status)
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_ = page.Execute(w, view{Report: rep, Nodes: slices.Sorted(maps.Keys(rep.Breakers))})
}

// fail sends an error as JSON ({"error": …}) or plain text.
func (h *Handler[K]) fail(w http.ResponseWriter, r *http.Request, status int, err error) {
	w.Header().Set("Cache-Control", "no-store")
	if wantsJSON(r) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		return
	}
	http.Error(w, "inspect: "+err.Error(), status)
}

// view is what the page template reads.
type view struct {
	Report
	Nodes []string // the keys of Breakers, sorted
}

var page = template.Must(template.New("page").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>cacheaside inspector</title>
<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left;vertical-align:top}pre{margin:0;white-space:pre-wrap;max-width:60em}.bad{color:#b00}</style>
</head><body>
<h1>cacheaside inspector</h1>
<form method="get"><input name="key" value="{{.Key}}" placeholder="key" autofocus> <button>Inspect</button></form>
{{if .Invalidated}}<p>Invalidated {{.Key}}.</p>{{end}}
{{with .Entry}}
<h2>Key {{$.Key}}</h2>
<form method="post"><input type="hidden" name="key" value="{{$.Key}}"><button>Invalidate</button></form>
<table>
<tr><th>Redis key</th><td>{{.RedisKey}}</td></tr>
{{if .Node}}<tr><th>node</th><td>{{.Node}}</td></tr>{{end}}
{{if .Error}}<tr><th>Redis error</th><td class="bad">{{.Error}}</td></tr>{{else}}
{{with .Value}}{{if .Exists}}
<tr><th>type, size</th><td>{{.Type}}, {{.Size}} bytes</td></tr>
<tr><th>PTTL</th><td>{{.PTTLMs}} ms</td></tr>
{{if .Unreadable}}<tr><th>unreadable</th><td class="bad">{{.Unreadable}}</td></tr>{{end}}
{{with .Envelope}}
<tr><th>envelope</th><td>version {{.Version}}, flags {{.Flags}}{{if .NotFound}} (not found){{end}}</td></tr>
{{if .Expiry}}<tr><th>logical expiry</th><td>{{.Expiry}} ({{.ExpiresInMs}} ms{{if .Stale}}, stale{{end}})</td></tr>{{end}}
<tr><th>load time</th><td>{{.LoadTimeMs}} ms</td></tr>
<tr><th>stored</th><td>{{if .Stored}}{{.Stored}} ({{.AgeMs}} ms ago){{else}}unknown (written before v0.3){{end}}</td></tr>
<tr><th>type fingerprint</th><td{{if not .TypeMatches}} class="bad"{{end}}>{{if .Fingerprint}}{{.Fingerprint}}{{else}}none (v0.1 entry){{end}}{{if .CacheFingerprint}}, this cache's {{.CacheFingerprint}}: {{if .TypeMatches}}matches{{else}}another value type or codec{{end}}{{end}}</td></tr>
{{end}}
{{if .Payload}}<tr><th>payload</th><td><pre>{{.Payload}}</pre></td></tr>{{end}}
{{if .PayloadHex}}<tr><th>payload (hex)</th><td><pre>{{.PayloadHex}}</pre></td></tr>{{end}}
{{if .RawHex}}<tr><th>raw (hex)</th><td><pre>{{.RawHex}}</pre></td></tr>{{end}}
{{if .Truncated}}<tr><th></th><td>(truncated)</td></tr>{{end}}
{{else}}<tr><th>value</th><td>none</td></tr>{{end}}{{end}}
<tr><th>lock</th><td>{{with .Lock}}{{if .Exists}}held by {{.Value}}{{.Error}}, {{.PTTLMs}} ms left{{else}}free{{end}}{{end}}</td></tr>
<tr><th>generation</th><td>{{with .Generation}}{{if .Exists}}{{.Value}}{{.Error}}, {{.PTTLMs}} ms left{{else}}none{{end}}{{end}}</td></tr>
{{end}}
</table>
{{end}}
<h2>Circuit breakers</h2>
<table><tr><th>node</th><th>state</th></tr>
{{range .Nodes}}<tr><td>{{if .}}{{.}}{{else}}(server){{end}}</td><td>{{index $.Breakers .}}</td></tr>{{end}}
</table>
<h2>Stats</h2>
<pre>{{printf "%+v" .Stats}}</pre>
</body></html>
`))
