package e2e

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// serialText is a certificate serial as the web view and meshctl show it.
func serialText(c *x509.Certificate) string {
	return strings.ToUpper(hex.EncodeToString(c.SerialNumber.Bytes()))
}

func getJSON(t *testing.T, url string, out any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

const thirdDataplane = `type: Dataplane
mesh: %s
name: db-1
networking:
  address: 127.0.0.1
  inbound:
  - port: 9003
    servicePort: 8003
    tags:
      kuma.io/service: db
      kuma.io/zone: zone-b
`

// TestGUIBuiltin drives the web view in headless Chromium against the real
// meshca-cp with a builtin mesh and three meshca-dp agents: the pages show
// what the agents hold, a rotation shows without reloading the page, the
// detail page decodes the certificate, and it all works by keyboard and on
// a narrow window.
func TestGUIBuiltin(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	cp := startCP(t, t.TempDir())
	cp.apply(t, builtinMeshWith("1h"))
	cp.apply(t, dataplanes("default")+"---\n"+fmt.Sprintf(thirdDataplane, "default"))
	agents := map[string]*agent{}
	for _, n := range []string{"backend-1", "web-1", "db-1"} {
		agents[n] = startAgent(t, cp, "default", n, n)
	}
	for _, a := range agents {
		a.waitCert(t)
	}

	var index struct {
		GUI string `json:"gui"`
	}
	getJSON(t, "http://"+cp.api+"/", &index)
	if index.GUI != "/gui/" {
		t.Fatalf("GET / gui = %q, want /gui/", index.GUI)
	}
	base := "http://" + cp.api + index.GUI

	// Meshes: three valid data planes, the builtin root in the bundle.
	b.do("open the Meshes page", chromedp.Navigate(base+"#/meshes"))
	b.waitText(10*time.Second, "3 valid data planes", `section[data-mesh="default"] li[data-state="valid"] .count`, func(s string) bool { return s == "3" })
	if got := b.text(`section[data-mesh="default"] [data-field="backend"]`); got != "ca-1" {
		t.Errorf("enabled backend shown as %q", got)
	}
	if got := b.text(`section[data-mesh="default"] table`); !strings.Contains(got, "meshca builtin CA default") || !strings.Contains(got, "UTC") {
		t.Errorf("trust bundle table does not show the root's subject and expiry: %q", got)
	}
	b.checkPage("meshes")

	// By keyboard: the Data planes link of the navigation.
	b.do("open Data planes by keyboard", chromedp.Focus(chromedp.CSS(`#nav a[data-page="dataplanes"]`)), chromedp.KeyEvent(kb.Enter))
	for name, a := range agents {
		want := serialText(a.leaf())
		b.waitText(10*time.Second, name+"'s serial", fmt.Sprintf(`#dp-table tr[data-name=%q] td[data-col="serial"]`, name), func(s string) bool { return s == want })
	}
	b.checkPage("dataplanes")
	evalAs[bool](b, `window.meshcaNoReload = true`)

	// A 10 s lifetime: the re-issue, then a rotation, appear on screen.
	cell := `#dp-table tr[data-name="backend-1"] td[data-col="serial"]`
	s1 := b.text(cell)
	cp.apply(t, builtinMeshWith("10s"))
	s2 := b.waitText(20*time.Second, "the re-issue for 10s on screen", cell, func(s string) bool { return s != s1 && s != "" })
	s3 := b.waitText(20*time.Second, "a rotation on screen", cell, func(s string) bool { return s != s2 && s != s1 && s != "" })
	if !evalAs[bool](b, `window.meshcaNoReload === true`) {
		t.Fatal("the page was reloaded to show the rotation")
	}
	// What the screen shows is what the agent holds.
	waitFor(t, 15*time.Second, "screen and agent agree on backend-1's serial", func() bool {
		return b.text(cell) == serialText(agents["backend-1"].leaf())
	})
	t.Logf("serials on screen: %s → %s → %s", s1, s2, s3)

	// Keyboard filter: typing narrows the table to one row.
	b.do("filter by keyboard", chromedp.Focus(chromedp.CSS("#filter")), chromedp.SendKeys(chromedp.CSS("#filter"), "web"))
	b.waitText(10*time.Second, "one matching row", "#count", func(s string) bool { return strings.HasPrefix(s, "Showing 1–1 of 1 matching") })
	if got := b.text("#dp-table tbody tr th"); got != "web-1" {
		t.Errorf("filtered row is %q, want web-1", got)
	}
	// Sorting by a column header button, descending on the second press.
	b.do("clear filter", evalVoid(`(f => { f.value = ""; f.dispatchEvent(new Event("input")); })(document.querySelector("#filter"))`))
	b.waitText(10*time.Second, "all rows back", "#count", func(s string) bool { return strings.Contains(s, "of 3 matching") })
	b.do("sort by name, descending, by keyboard", chromedp.Focus(chromedp.CSS(`button[data-sort="name"]`)), chromedp.KeyEvent(kb.Enter))
	b.waitText(10*time.Second, "name descending", "#dp-table tbody tr th", func(s string) bool { return s == "web-1" })
	if got := evalAs[string](b, `document.querySelector('th[data-col="name"]').getAttribute("aria-sort")`); got != "descending" {
		t.Errorf("name column aria-sort = %q, want descending", got)
	}

	// Detail: the decoded certificate and its rotation history.
	b.do("open backend-1", chromedp.Navigate(base+"#/meshes/default/dataplanes/backend-1"))
	b.waitText(10*time.Second, "detail page", `#dp-summary [data-field="serial"]`, func(s string) bool { return len(s) > 8 })
	leaf := b.text(`section[data-chain="0"]`)
	for _, want := range []string{"spiffe://default/backend", "ECDSA P-256", "meshca builtin CA default", "Not after"} {
		if !strings.Contains(leaf, want) {
			t.Errorf("decoded leaf does not show %q: %q", want, leaf)
		}
	}
	if root := b.text(`section[data-chain="1"]`); !strings.Contains(root, "Root") {
		t.Errorf("chain has no root from the trust bundle: %q", root)
	}
	issued := evalAs[int](b, `[...document.querySelectorAll("#history tbody tr")].filter(r => r.textContent.includes("issued")).length`)
	if issued < 3 {
		t.Errorf("rotation history shows %d issuances, want at least 3 (first, re-issue, rotation)", issued)
	}
	b.checkPage("dataplane-detail")

	// Timeline: every data plane counted, bars drawn.
	b.do("open the timeline", chromedp.Navigate(base+"#/meshes/default/timeline"))
	b.waitText(10*time.Second, "timeline summary", `#timeline-summary [data-field="total"]`, func(s string) bool { return s == "3" })
	bars := evalAs[int](b, `document.querySelectorAll("#timeline-chart rect.bar-exp, #timeline-chart rect.bar-rot").length`)
	if bars == 0 {
		t.Error("the timeline draws no bar")
	}
	b.checkPage("timeline")

	// Budget page of a builtin mesh says there is nothing to bill.
	b.do("open the budget page", chromedp.Navigate(base+"#/meshes/default/budget"))
	b.waitText(10*time.Second, "no-budget note", "#no-budget", func(s string) bool { return strings.Contains(s, "builtin") })

	// Narrow window: nothing wider than the screen.
	b.do("narrow window", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2)), chromedp.Navigate(base+"#/meshes"))
	b.waitText(10*time.Second, "meshes page, narrow", `section[data-mesh="default"] li[data-state="valid"] .count`, func(s string) bool { return s != "" })
	if evalAs[bool](b, `document.documentElement.scrollWidth > window.innerWidth + 1`) {
		t.Error("the Meshes page scrolls sideways on a 390 px wide window")
	}
	b.checkPage("meshes-narrow")
	b.do("narrow table", chromedp.Navigate(base+"#/meshes/default/dataplanes"))
	b.waitText(10*time.Second, "table, narrow", "#count", func(s string) bool { return strings.Contains(s, "of 3 matching") })
	if evalAs[bool](b, `document.documentElement.scrollWidth > window.innerWidth + 1`) {
		t.Error("the Data planes page scrolls sideways on a 390 px wide window (only its table should)")
	}
	b.checkPage("dataplanes-narrow")
}

// TestGUIExternalCA runs an acmpca mesh against acmpca-local: the budget
// page's projection is the documented formula for the mesh, meshctl inspect
// mesh prints the same numbers, and a CA that fails shows as failing with
// its error text.
func TestGUIExternalCA(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	emu := startEmulator(t,
		"--ca", "arn="+seedARN+",type=ROOT,key=EC_prime256v1,mode=SHORT_LIVED_CERTIFICATE",
		"--credentials", "AKIDENV:secret-env")
	cp := startCP(t, t.TempDir(), "AWS_ENDPOINT_URL_ACM_PCA="+emu.url, "AWS_REGION=us-east-1",
		"AWS_ACCESS_KEY_ID=AKIDENV", "AWS_SECRET_ACCESS_KEY=secret-env", "AWS_EC2_METADATA_DISABLED=true")
	cp.apply(t, "type: Mesh\nname: pca\n")
	cp.apply(t, fmt.Sprintf("type: Secret\nmesh: pca\nname: ca\ndata: %s\n", base64.StdEncoding.EncodeToString(emu.chain(t, seedARN))))
	// Two backends: the builtin one first, then a switch to ACM PCA paced
	// at 0.3 certificates a second, so the switch takes seconds to watch.
	mesh := func(enabled, expiration, rps string) string {
		return fmt.Sprintf(`type: Mesh
name: pca
mtls:
  enabledBackend: %s
  backends:
  - name: local
    type: builtin
    dpCert: {rotation: {expiration: 1h}}
  - name: aws
    type: acmpca
    dpCert: {rotation: {expiration: %s}, requestTimeout: 2s}
    conf:
      arn: %s
      caCert: {secret: ca}
      maxRequestsPerSecond: %s
`, enabled, expiration, seedARN, rps)
	}
	cp.apply(t, mesh("local", "1h", "0.3"))
	cp.apply(t, dataplanes("pca")+"---\n"+fmt.Sprintf(thirdDataplane, "pca"))
	type overviewView struct {
		States map[string]int `json:"states"`
		Switch *struct {
			Done int `json:"done"`
		} `json:"switch"`
		Backends []struct {
			Name    string `json:"name"`
			Holding int    `json:"holding"`
		} `json:"backends"`
	}
	overview := func() (v overviewView) {
		getJSON(t, "http://"+cp.api+"/meshes/pca/_overview?pricePerCertificate=0.1", &v)
		return v
	}
	waitFor(t, 30*time.Second, "3 valid certificates from the builtin CA", func() bool { return overview().States["valid"] == 3 })
	base := "http://" + cp.api + "/gui/"

	// The switch to ACM PCA, watched on the Meshes page.
	b.do("open the Meshes page", chromedp.Navigate(base+"#/meshes"))
	b.waitText(10*time.Second, "the mesh", `section[data-mesh="pca"] [data-field="backend"]`, func(s string) bool { return s == "local" })
	cp.apply(t, mesh("aws", "1h", "0.3"))
	progress := b.waitText(15*time.Second, "the CA switch in progress", `section[data-mesh="pca"] [data-field="switch"]`, func(s string) bool {
		return strings.Contains(s, "of 3 data planes") && strings.Contains(s, "hold aws's certificate; still on the old CA: local")
	})
	t.Logf("switch on screen: %s", progress)
	b.checkPage("meshes-switch")
	waitFor(t, 30*time.Second, "the switch done on screen", func() bool {
		return b.text(`section[data-mesh="pca"] [data-field="switch"]`) == "" &&
			b.text(`section[data-mesh="pca"] [data-field="backend"]`) == "aws" &&
			b.text(`section[data-mesh="pca"] li[data-state="valid"] .count`) == "3"
	})
	if v := overview(); v.Switch != nil || v.States["valid"] != 3 {
		t.Fatalf("after the switch: %+v", v)
	}

	// The projection: 3 data planes × 30 days ÷ (0.8 × 1 h) = 2700
	// certificates a month, at $0.10 each.
	const n, lifetime, price = 3, time.Hour, 0.10
	wantCerts := n * (30 * 24 * time.Hour).Seconds() / (0.8 * lifetime.Seconds())
	wantCost := wantCerts * price
	b.do("open the budget page", chromedp.Navigate(base+"#/meshes/pca/budget?price=0.1"))
	b.waitText(10*time.Second, "projection", "#projected-certs", func(s string) bool { return s != "" })
	certs := evalAs[float64](b, `Number(document.querySelector('#projection [data-field="certs"]').dataset.value)`)
	cost := evalAs[float64](b, `Number(document.querySelector('#projection [data-field="cost"]').dataset.value)`)
	if certs != wantCerts || cost != wantCost {
		t.Errorf("projection %v certificates $%v, want %v and $%v", certs, cost, wantCerts, wantCost)
	}
	if got, want := b.text("#projected-certs"), "2,700.0"; got != want {
		t.Errorf("projected certificates shown as %q, want %q", got, want)
	}
	if got, want := b.text("#projected-cost"), "$270.00"; got != want {
		t.Errorf("projected cost shown as %q, want %q", got, want)
	}
	formula := b.text("#formula")
	if !strings.Contains(formula, "3 data planes × 2592000 s ÷ (0.80 × 3600 s) = 2700.0 certificates a month; × $0.1 = $270.00") {
		t.Errorf("formula shown as %q", formula)
	}
	today, _ := strconv.Atoi(strings.ReplaceAll(b.text(`[data-field="today"]`), ",", ""))
	if today < 3 {
		t.Errorf("billable certificates today shown as %d, want at least the 3 issued", today)
	}
	if got := b.text(`[data-field="rps"]`); !strings.Contains(got, "of 0.3") {
		t.Errorf("request rate does not show maxRequestsPerSecond 0.3: %q", got)
	}
	b.checkPage("budget")

	// meshctl inspect mesh prints the same numbers.
	out := cp.mustMeshctl(t, "inspect", "mesh", "pca", "--price-per-certificate", "0.1")
	for _, want := range []string{"2700.0", "$270.00", formula, "aws (acmpca)", "valid 3"} {
		if !strings.Contains(out, want) {
			t.Errorf("meshctl inspect mesh does not show %q:\n%s", want, out)
		}
	}

	// Throttles: ACM grants 1 IssueCertificate a second while the backend
	// paces at 5, and a new conf re-issues all three certificates.
	throttles := func() int64 {
		var a struct {
			Budget struct {
				Throttles int64 `json:"throttles"`
			} `json:"budget"`
		}
		getJSON(t, "http://"+cp.api+"/gui/api/meshes/pca/budget", &a)
		return a.Budget.Throttles
	}
	// serials returns the serial each data plane holds, as its insight says.
	serials := func() map[string]string {
		got := map[string]string{}
		for _, dp := range []string{"backend-1", "web-1", "db-1"} {
			var in struct {
				MTLS struct {
					Serial string `json:"serial"`
				} `json:"mTLS"`
			}
			getJSON(t, "http://"+cp.api+"/meshes/pca/dataplanes/"+dp+"/_insight", &in)
			got[dp] = in.MTLS.Serial
		}
		return got
	}
	oldConf := serials()
	emu.admin(t, "rates", `{"IssueCertificate":1}`)
	cp.apply(t, mesh("aws", "1h", "5"))
	waitFor(t, 30*time.Second, "ACM PCA throttling", func() bool { return throttles() > 0 })
	b.do("open the budget page", chromedp.Navigate(base+"#/meshes/pca/budget"))
	waitFor(t, 10*time.Second, "throttles on the budget page", func() bool {
		n := throttles()
		return strings.HasPrefix(b.text(`[data-field="throttles"]`), fmt.Sprintf("%d of ", n))
	})
	t.Logf("budget page: throttled %s", b.text(`[data-field="throttles"]`))
	emu.admin(t, "rates", `{"IssueCertificate":25}`)
	// Every data plane holds a certificate of the new conf (the old conf's
	// count as valid too): no issuance is left in flight when the outage
	// below begins, which would fail in GetCertificate instead.
	waitFor(t, 30*time.Second, "3 certificates for the new conf", func() bool {
		if v := overview(); v.States["valid"] != 3 || v.Switch != nil {
			return false
		}
		for dp, serial := range serials() {
			if serial == "" || serial == oldConf[dp] {
				return false
			}
		}
		return true
	})

	// The CA fails: ACM PCA is down when a new lifetime makes every data
	// plane re-issue. Each shows as failing (its certificate stays in
	// service), with the error its insight reports. (The conf is the same,
	// so the apply needs no call to ACM.)
	emu.admin(t, "faults", `{"outageFor":"300s"}`)
	cp.apply(t, mesh("aws", "2h", "5"))
	b.do("open the Meshes page", chromedp.Navigate(base+"#/meshes"))
	b.waitText(60*time.Second, "3 failing data planes", `section[data-mesh="pca"] li[data-state="failing"] .count`, func(s string) bool { return s == "3" })
	// Retries go on, and their error text may change: compare what the
	// page and the API say at the same moment, until they agree.
	lastError := func() string {
		var in struct {
			MTLS struct {
				LastError string `json:"lastError"`
			} `json:"mTLS"`
		}
		getJSON(t, "http://"+cp.api+"/meshes/pca/dataplanes/backend-1/_insight", &in)
		return in.MTLS.LastError
	}
	var apiErr string
	waitFor(t, 20*time.Second, "the Meshes page listing backend-1's error", func() bool {
		apiErr = lastError()
		listed := evalAs[[]string](b, `[...document.querySelectorAll('section[data-mesh="pca"] .mesh-errors .err-text')].map(e => e.textContent)`)
		return apiErr != "" && slices.Contains(listed, apiErr)
	})
	if !strings.Contains(apiErr, "IssueCertificate") {
		t.Errorf("error text %q does not name the failed ACM PCA call", apiErr)
	}
	b.checkPage("meshes-failing")
	b.do("open the failing table", chromedp.Navigate(base+"#/meshes/pca/dataplanes?state=failing"))
	b.waitText(10*time.Second, "failing rows", "#count", func(s string) bool { return strings.Contains(s, "of 3 matching") })
	waitFor(t, 20*time.Second, "the table showing backend-1's error", func() bool {
		apiErr = lastError()
		return strings.Contains(b.text(`#dp-table tr[data-name="backend-1"] td[data-col="lastError"]`), apiErr)
	})
	if got := b.text(`#dp-table tr[data-name="backend-1"] td[data-col="state"]`); got != "failing" {
		t.Errorf("state shown as %q", got)
	}
	b.checkPage("dataplanes-failing")
}

// TestGUIHTTPSNeedsToken opens the web view on the HTTPS listener, where the
// API wants a user token: the page loads (its files hold no data), the data
// does not, and the page asks for a token and sends the one it is given.
func TestGUIHTTPSNeedsToken(t *testing.T) {
	t.Parallel()
	// The listener's certificate is signed by the control plane's own CA.
	b := newBrowser(t, chromedp.Flag("ignore-certificate-errors", true))
	cp := startCP(t, t.TempDir())
	cp.apply(t, builtinMeshWith("1h"))
	resp, err := cp.httpsClient(t).Get("https://" + cp.apiTLS + "/gui/api/meshes")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous GET /gui/api/meshes over HTTPS: %s, want 401", resp.Status)
	}
	b.do("open the web view over HTTPS", chromedp.Navigate("https://"+cp.apiTLS+"/gui/#/meshes"))
	first := b.waitText(10*time.Second, "the sign-in form", "#token-form", func(s string) bool { return strings.Contains(s, "authentication required") })
	if strings.Contains(b.text("main"), "default") {
		t.Error("mesh data shown without a token")
	}
	b.checkPage("sign-in")
	b.do("give a token", chromedp.SendKeys(chromedp.CSS("#token"), "not-a-real-token"), chromedp.KeyEvent(kb.Enter))
	b.waitText(10*time.Second, "the token refused", "#token-form", func(s string) bool {
		return s != first && strings.Contains(s, "unauthenticated")
	})
	if tok := evalAs[string](b, `sessionStorage.getItem("meshca-user-token") || ""`); tok != "" {
		t.Errorf("a refused token is kept: %q", tok)
	}
}

// unlabelled lists the page's controls a screen reader would announce
// without a name (no text, label, aria-label or title).
func (b *browser) unlabelled() []string {
	return evalAs[[]string](b, `[...document.querySelectorAll("a, button, input, select, progress")]
		.filter(e => !(e.textContent.trim() || e.getAttribute("aria-label") || (e.labels && e.labels.length) || e.title))
		.map(e => e.outerHTML.slice(0, 120))`)
}

// checkPage screenshots the page and checks every control has a name.
func (b *browser) checkPage(name string) {
	b.t.Helper()
	b.screenshot(name)
	if u := b.unlabelled(); len(u) > 0 {
		b.t.Errorf("%s: controls without an accessible name: %v", name, u)
	}
}

// evalVoid is an action that evaluates JavaScript for its effect.
func evalVoid(expr string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Evaluate[any](expr)(ctx, t)
		return chromedp.Void{}, err
	}
}

// TestGUIZones: on a global control plane the Zones page lists each zone,
// online or not (in words, not by colour alone), with its data planes as
// the zone reports them, refreshed without a reload: a zone stopped shows
// as offline.
func TestGUIZones(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	f := startGlobal(t)
	f.global.apply(t, builtinMeshWith("1h"))
	z1 := f.startZone(t, "zone-1", f.zoneToken(t, "zone-1"))
	waitFor(t, 20*time.Second, "the mesh in zone-1", func() bool {
		_, err := z1.meshctl("get", "mesh", "default")
		return err == nil
	})
	z1.apply(t, dataplane("default", "backend-1", "backend", 9001))

	b.do("open the Zones page", chromedp.Navigate("http://"+f.global.api+"/gui/#/zones"))
	b.waitText(20*time.Second, "zone-1 online", `tr[data-zone="zone-1"] [data-field="status"]`, func(s string) bool { return strings.Contains(s, "Online") })
	b.waitText(20*time.Second, "zone-1's data plane counted", `tr[data-zone="zone-1"] [data-field="dataplanes"]`, func(s string) bool { return s == "1" })
	b.checkPage("zones")
	evalAs[bool](b, `window.meshcaNoReload = true`)
	z1.proc.stop()
	b.waitText(20*time.Second, "zone-1 offline", `tr[data-zone="zone-1"] [data-field="status"]`, func(s string) bool { return strings.Contains(s, "Offline") })
	if !evalAs[bool](b, `window.meshcaNoReload === true`) {
		t.Fatal("the page was reloaded")
	}
}
