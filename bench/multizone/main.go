// Command multizone measures a federation of real meshca-cp processes: one
// global and N zones with M data planes each (issue 11's targets).
//
//	go run ./bench/multizone -zones 10 -dps 1000
//
// It reports: the time until every zone's data planes and their
// certificate insights are visible on global; how long a Mesh change on
// global takes to reach every zone (p50/p99 over several changes); the time
// for every zone to resync after global restarts, and what that resync sent
// against a full dump; global's peak RSS; and a zone's RSS beside a
// standalone control plane with the same data planes.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"meshca/bench/internal/benchproc"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

var (
	nZones = flag.Int("zones", 10, "zone control planes")
	nDPs   = flag.Int("dps", 1000, "data planes per zone")
	nMesh  = flag.Int("changes", 20, "Mesh changes timed on global")
)

func main() {
	flag.Parse()
	dir, err := os.MkdirTemp("", "meshca-multizone-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bin, err := benchproc.Build(dir, "meshca-cp")
	if err != nil {
		log.Fatal(err)
	}
	load := func() string {
		b, _ := os.ReadFile("/proc/loadavg")
		return strings.Join(strings.Fields(string(b))[:3], " ")
	}
	fmt.Printf("command: go run ./bench/multizone -zones %d -dps %d -changes %d\nload average at start: %s\n", *nZones, *nDPs, *nMesh, load())

	kds := benchproc.FreeAddr()
	global := start(bin, filepath.Join(dir, "global"), "--mode", "global", "--kds-address", kds)
	defer func() { global.stop() }() // global is replaced by a restart below
	global.put("/meshes/default", mesh(""))
	zones := make([]*cp, *nZones)
	for i := range zones {
		name := fmt.Sprintf("zone-%d", i+1)
		tok := global.post("/tokens/zone", fmt.Sprintf(`{"zone":%q}`, name))
		tokFile := filepath.Join(dir, name+".token")
		if err := os.WriteFile(tokFile, tok, 0o600); err != nil {
			log.Fatal(err)
		}
		zones[i] = start(bin, filepath.Join(dir, name), "--mode", "zone", "--zone", name, "--global-address", kds,
			"--global-ca-cert", filepath.Join(dir, "global", "kds-server-ca.pem"), "--zone-token-file", tokFile)
		defer zones[i].stop()
	}
	waitFor("the mesh in every zone", 60*time.Second, func() bool {
		for _, z := range zones {
			if z.status("/meshes/default") != 200 {
				return false
			}
		}
		return true
	})

	// 1. Registration in every zone; time until global sees every data
	// plane with its certificate.
	t0 := time.Now()
	var wg sync.WaitGroup
	for zi, z := range zones {
		wg.Go(func() { register(z, zi) })
	}
	wg.Wait()
	registered := time.Since(t0)
	total := *nZones * *nDPs
	waitFor("every data plane and its insight on global", 10*time.Minute, func() bool {
		return global.certified() >= total
	})
	visible := time.Since(t0)
	fmt.Printf("\n1. %d data planes registered in %d zones in %v; all visible on global with their certificate insight after %v (target < 15 s)\n",
		total, *nZones, registered.Round(time.Millisecond), visible.Round(time.Millisecond))

	// 2. Mesh changes on global, timed until every zone has them.
	var lat []time.Duration
	for c := range *nMesh {
		label := fmt.Sprintf("change-%d", c)
		t := time.Now()
		global.put("/meshes/default", mesh(label))
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, z := range zones {
			wg.Go(func() {
				for !strings.Contains(string(z.get("/meshes/default")), label) {
					time.Sleep(5 * time.Millisecond)
				}
				mu.Lock()
				lat = append(lat, time.Since(t))
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	slices.Sort(lat)
	fmt.Printf("2. a Mesh change on global reaching each of %d zones (%d samples): p50 %v, p99 %v, max %v (target p99 < 1 s)\n",
		*nZones, len(lat), pct(lat, 0.5), pct(lat, 0.99), lat[len(lat)-1].Round(time.Millisecond))

	// 3. Global restart: every zone resynced, and what it cost.
	globalPeak := benchproc.Status(global.cmd.Process.Pid, "VmHWM")
	time.Sleep(6 * time.Second) // the zones' next look: what the Mesh changes moved reaches global first
	full := global.fullDumpBytes()
	global.stop()
	t1 := time.Now()
	global = start(bin, filepath.Join(dir, "global"), "--mode", "global", "--kds-address", kds)
	waitFor("every zone connected and synced again", 5*time.Minute, func() bool { return global.zonesSynced(*nZones) })
	resync := time.Since(t1)
	time.Sleep(2 * time.Second) // let the zones' first looks settle
	sent, received := global.zoneBytes()
	fmt.Printf("3. global restarted: all %d zones resynced %v after the restart (target < 10 s); bytes exchanged since: %d (global->zones %d, zones->global %d) against %d exchanged since global first started: %.2f%%\n",
		*nZones, resync.Round(time.Millisecond), sent+received, sent, received, full, 100*float64(sent+received)/float64(full))

	// 4. Memory.
	zoneRSS := benchproc.Status(zones[0].cmd.Process.Pid, "VmHWM")
	standalone := start(bin, filepath.Join(dir, "standalone"))
	defer standalone.stop()
	standalone.put("/meshes/default", mesh(""))
	register(standalone, 0)
	waitFor("the standalone's data planes certified", 5*time.Minute, func() bool { return standalone.certified() >= *nDPs })
	time.Sleep(6 * time.Second) // past the zone's next look, so both are at rest
	fmt.Printf("4. global peak RSS %s with %d zones and %d remote data planes (target < 200 MB)\n   zone-1: peak %s, now %s; a standalone with the same %d data planes: peak %s, now %s (target: zone overhead < 10%%)\n",
		globalPeak, *nZones, total, zoneRSS, benchproc.Status(zones[0].cmd.Process.Pid, "VmRSS"), *nDPs, benchproc.Status(standalone.cmd.Process.Pid, "VmHWM"), benchproc.Status(standalone.cmd.Process.Pid, "VmRSS"))
	fmt.Printf("load average at end: %s\n", load())
}

func mesh(label string) string {
	labels := ""
	if label != "" {
		labels = fmt.Sprintf(`,"labels":{"bench":%q}`, label)
	}
	return `{"type":"Mesh","name":"default"` + labels + `,"mtls":{"enabledBackend":"ca-1","backends":[{"name":"ca-1","type":"builtin","dpCert":{"rotation":{"expiration":"24h"}}}]}}`
}

func register(z *cp, zi int) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range *nDPs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			name := fmt.Sprintf("dp-%d-%05d", zi, i)
			z.put("/meshes/default/dataplanes/"+name, fmt.Sprintf(`{"type":"Dataplane","mesh":"default","name":%q,"networking":{"address":"10.%d.%d.%d","inbound":[{"port":9000,"tags":{"kuma.io/service":"svc-%d"}}]}}`,
				name, zi, i/250, i%250, i%20))
		})
	}
	wg.Wait()
}

type cp struct {
	cmd *exec.Cmd
	api string
}

func start(bin, dataDir string, args ...string) *cp {
	api := benchproc.FreeAddr()
	all := append([]string{"run", "--data-dir", dataDir, "--api-address", api, "--api-tls-address", benchproc.FreeAddr(), "--dp-server-address", benchproc.FreeAddr(), "--log-level", "warn"}, args...)
	cmd := exec.Command(bin, all...)
	logf, err := os.Create(dataDir + ".log")
	if err != nil {
		log.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	c := &cp{cmd: cmd, api: "http://" + api}
	waitFor("meshca-cp ready at "+api, 60*time.Second, func() bool { return c.status("/readyz") == 200 })
	return c
}

func (c *cp) stop() {
	if c.cmd.ProcessState != nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	_ = c.cmd.Wait()
}

func (c *cp) do(method, path, body string) (int, []byte) {
	req, _ := http.NewRequest(method, c.api+path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (c *cp) status(path string) int { s, _ := c.do("GET", path, ""); return s }
func (c *cp) get(path string) []byte { _, b := c.do("GET", path, ""); return b }

func (c *cp) put(path, body string) {
	for i := 0; ; i++ {
		s, b := c.do("PUT", path, body)
		if s/100 == 2 {
			return
		}
		if i == 20 {
			log.Fatalf("PUT %s: %d %s", path, s, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *cp) post(path, body string) []byte {
	s, b := c.do("POST", path, body)
	if s/100 != 2 {
		log.Fatalf("POST %s: %d %s", path, s, b)
	}
	return bytes.TrimSpace(b)
}

// certified counts the mesh's data planes with a certificate in their
// insight (on global: as their zone reported it).
func (c *cp) certified() int {
	n := 0
	next := "/meshes/default/dataplanes/_overview?size=1000"
	for next != "" {
		var page struct {
			Items []struct {
				DataplaneInsight struct {
					MTLS *struct {
						CertificateExpirationTime string `json:"certificateExpirationTime"`
					} `json:"mTLS"`
				} `json:"dataplaneInsight"`
			} `json:"items"`
			Next *string `json:"next"`
		}
		if json.Unmarshal(c.get(next), &page) != nil {
			return n
		}
		for _, it := range page.Items {
			if m := it.DataplaneInsight.MTLS; m != nil && m.CertificateExpirationTime != "" {
				n++
			}
		}
		next = ""
		if page.Next != nil {
			next = strings.TrimPrefix(*page.Next, c.api)
			if i := strings.Index(next, "/meshes/"); i > 0 {
				next = next[i:]
			}
		}
	}
	return n
}

type zoneOverview struct {
	Items []struct {
		ZoneInsight struct {
			Subscriptions []struct {
				ConnectTime    *time.Time `json:"connectTime"`
				DisconnectTime *time.Time `json:"disconnectTime"`
				Status         struct {
					LastUpdateTime *time.Time `json:"lastUpdateTime"`
				} `json:"status"`
				BytesSent     int64 `json:"bytesSent"`
				BytesReceived int64 `json:"bytesReceived"`
			} `json:"subscriptions"`
		} `json:"zoneInsight"`
	} `json:"items"`
}

func (c *cp) zones() zoneOverview {
	var z zoneOverview
	_ = json.Unmarshal(c.get("/zones/_overview?size=1000"), &z)
	return z
}

// zonesSynced: n zones connected, each having exchanged something.
func (c *cp) zonesSynced(n int) bool {
	ok := 0
	for _, it := range c.zones().Items {
		for _, s := range it.ZoneInsight.Subscriptions {
			if s.ConnectTime != nil && s.DisconnectTime == nil && s.Status.LastUpdateTime != nil {
				ok++
			}
		}
	}
	return ok == n
}

func (c *cp) zoneBytes() (sent, received int64) {
	for _, it := range c.zones().Items {
		for _, s := range it.ZoneInsight.Subscriptions {
			sent += s.BytesSent
			received += s.BytesReceived
		}
	}
	return sent, received
}

// fullDumpBytes is what a full dump exchanges: what every zone and global
// sent each other since global started, up to now (the initial sync of
// every data plane and its insight, and the mesh's records to every zone),
// less nothing: read before a restart, it is an upper bound of a dump.
func (c *cp) fullDumpBytes() int64 {
	sent, received := c.zoneBytes()
	return sent + received
}

func waitFor(what string, d time.Duration, ok func() bool) {
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			log.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func pct(s []time.Duration, p float64) time.Duration {
	return s[min(len(s)-1, int(float64(len(s))*p))].Round(time.Millisecond)
}
