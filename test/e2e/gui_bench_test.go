package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestGUIBench10k measures the Data planes page of a mesh of 10,000 data
// planes in headless Chromium: from navigation to the first page of rows
// on screen, then a re-sort and a page turn. It records numbers for
// BENCHMARKS.md and asserts none (run it with MESHCA_GUI_BENCH=1). Not
// parallel: a measurement wants the machine to itself.
func TestGUIBench10k(t *testing.T) {
	if os.Getenv("MESHCA_GUI_BENCH") != "1" {
		t.Skip("measurement, not a test: run with MESHCA_GUI_BENCH=1")
	}
	const n = 10000
	b := newBrowser(t)
	cp := startCP(t, t.TempDir(), "MESHCA_STORE=memory")
	cp.apply(t, builtinMeshWith("24h"))

	start := time.Now()
	var wg sync.WaitGroup
	var failed atomic.Int64
	next := make(chan int)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				body := fmt.Sprintf(`{"type":"Dataplane","mesh":"default","name":"dp-%05d","networking":{"address":"10.0.%d.%d","inbound":[{"port":%d,"servicePort":8080,"tags":{"kuma.io/service":"svc-%d","kuma.io/zone":"zone-%d"}}]}}`,
					i, i/250, i%250, 10000+i%50000, i%50, i%3)
				req, _ := http.NewRequest(http.MethodPut, fmt.Sprintf("http://%s/meshes/default/dataplanes/dp-%05d", cp.api, i), bytes.NewReader([]byte(body)))
				req.Header.Set("Content-Type", "application/json")
				resp, err := http.DefaultClient.Do(req)
				if err != nil || resp.StatusCode/100 != 2 {
					failed.Add(1)
				}
				if resp != nil {
					resp.Body.Close()
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d of %d PUTs failed", f, n)
	}
	waitFor(t, 5*time.Minute, "10,000 valid certificates", func() bool {
		var v struct {
			States map[string]int `json:"states"`
		}
		getJSON(t, "http://"+cp.api+"/meshes/default/_overview", &v)
		return v.States["valid"] == n
	})
	t.Logf("10,000 data planes registered and certified in %v", time.Since(start).Round(time.Millisecond))

	// The JSON of the first page, as the page asks for it.
	var api []time.Duration
	for i := 0; i < 10; i++ {
		t0 := time.Now()
		var page struct {
			Items []any `json:"items"`
		}
		getJSON(t, "http://"+cp.api+"/gui/api/meshes/default/dataplanes?sort=name&dir=asc&offset=0&limit=50", &page)
		api = append(api, time.Since(t0))
		if len(page.Items) != 50 {
			t.Fatalf("first page has %d rows", len(page.Items))
		}
	}

	url := "http://" + cp.api + "/gui/#/meshes/default/dataplanes"
	var first []float64
	for i := 0; i < 7; i++ {
		b.do("navigate", chromedp.Navigate("about:blank"), chromedp.Navigate(url))
		waitFor(t, 30*time.Second, "the first page of rows", func() bool {
			return evalAs[int](b, `performance.getEntriesByName("dataplanes-first-render").length`) > 0
		})
		if rows := evalAs[int](b, `document.querySelectorAll("#dp-table tbody tr[data-name]").length`); rows != 50 {
			t.Fatalf("first page shows %d rows", rows)
		}
		first = append(first, evalAs[float64](b, `performance.getEntriesByName("dataplanes-first-render")[0].startTime`))
	}
	b.screenshot("dataplanes-10000")

	// A click on a column header to the re-sorted page on screen, and a page turn.
	after := func(action string) float64 {
		t0 := evalAs[float64](b, action+`; performance.now()`)
		var took float64
		waitFor(t, 30*time.Second, "the re-rendered table", func() bool {
			took = evalAs[float64](b, fmt.Sprintf(`(() => { const m = performance.getEntriesByName("dataplanes-render").filter(e => e.startTime > %f); return m.length ? m[0].startTime - %f : -1 })()`, t0, t0))
			return took >= 0
		})
		return took
	}
	var sortMs, pageMs []float64
	for i := 0; i < 5; i++ {
		sortMs = append(sortMs, after(`document.querySelector('button[data-sort="timeLeft"]').click()`))
		pageMs = append(pageMs, after(`document.querySelector("#next").click()`))
	}
	t.Logf("first page JSON (server, loopback): median %v of %d", median(api), len(api))
	t.Logf("navigation → first 50 rows on screen: median %.0f ms, all %v", medianF(first), roundAll(first))
	t.Logf("sort click → re-sorted rows on screen: median %.0f ms, all %v", medianF(sortMs), roundAll(sortMs))
	t.Logf("next page click → rows on screen: median %.0f ms, all %v", medianF(pageMs), roundAll(pageMs))
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2].Round(10 * time.Microsecond)
}

func medianF(f []float64) float64 {
	s := slices.Clone(f)
	slices.Sort(s)
	return s[len(s)/2]
}

func roundAll(f []float64) string {
	var out []string
	for _, v := range f {
		out = append(out, fmt.Sprintf("%.0f", v))
	}
	return strings.Join(out, " ")
}
