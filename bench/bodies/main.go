// Command bodies measures what a burst of large API request bodies costs
// meshca-cp: N clients PUT a Secret of S bytes at once while another
// client times GET / (issue 9: 300 concurrent 4 MB PUTs once took the heap
// to 1.87 GB and GET / p99 to 2.5 s). It builds and starts a real
// meshca-cp and reports its peak RSS (VmHWM), the answers by status and the
// GET / latencies.
//
//	go run ./bench/bodies -n 300 -size 1000000
//	go run ./bench/bodies -n 300 -size 4000000 -max-body 4194304
package main

import (
	"bytes"
	"encoding/base64"
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
	"time"
)

func main() {
	n := flag.Int("n", 300, "concurrent PUTs")
	size := flag.Int("size", 1_000_000, "bytes of each request body (base64 of a Secret's data)")
	maxBody := flag.Int("max-body", 0, "meshca-cp --api-max-body-bytes (0: its default)")
	flag.Parse()

	dir, err := os.MkdirTemp("", "meshca-bodies-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bin, err := benchproc.Build(dir, "meshca-cp")
	if err != nil {
		log.Fatal(err)
	}
	api, dp := benchproc.FreeAddr(), benchproc.FreeAddr()
	cp := exec.Command(bin, "run", "--data-dir", filepath.Join(dir, "data"), "--api-address", api, "--dp-server-address", dp, "--api-tls-address", benchproc.FreeAddr(), "--log-level", "warn", fmt.Sprintf("--api-max-body-bytes=%d", *maxBody))
	cp.Stderr = os.Stderr
	if err := cp.Start(); err != nil {
		log.Fatal(err)
	}
	defer func() { _ = cp.Process.Kill(); _ = cp.Wait() }()
	base := "http://" + api
	for i := 0; ; i++ {
		if resp, err := http.Get(base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if i > 300 {
			log.Fatal("meshca-cp not ready after 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	rssBefore := benchproc.Status(cp.Process.Pid, "VmRSS")

	data := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("k"), *size*3/4))
	statuses := map[int]int{}
	var mu sync.Mutex
	stop := make(chan struct{})
	var lat []time.Duration
	probeDone := make(chan struct{})
	go func() {
		defer close(probeDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			t0 := time.Now()
			if resp, err := http.Get(base + "/"); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			lat = append(lat, time.Since(t0))
			time.Sleep(10 * time.Millisecond)
		}
	}()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range *n {
		wg.Go(func() {
			body := fmt.Sprintf(`{"type":"GlobalSecret","name":"big-%d","data":"%s"}`, i, data)
			req, _ := http.NewRequest("PUT", fmt.Sprintf("%s/global-secrets/big-%d", base, i), strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			status := 0
			if resp, err := http.DefaultClient.Do(req); err == nil {
				status = resp.StatusCode
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			mu.Lock()
			statuses[status]++
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stop)
	<-probeDone
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(float64(len(lat))*p))].Round(time.Millisecond)
	}
	fmt.Printf("command: go run ./bench/bodies -n %d -size %d -max-body %d\n", *n, *size, *maxBody)
	fmt.Printf("%d concurrent PUTs of %d-byte bodies in %v; answers by status: %v (0 = connection error)\n", *n, len(data)+60, elapsed.Round(time.Millisecond), statuses)
	fmt.Printf("meshca-cp RSS before %s, peak (VmHWM) %s\n", rssBefore, benchproc.Status(cp.Process.Pid, "VmHWM"))
	fmt.Printf("GET / during the burst: %d samples, p50 %v, p99 %v, max %v\n", len(lat), pct(0.5), pct(0.99), pct(1))
}
