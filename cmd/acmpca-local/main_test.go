package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/acmpca"
)

const testARN = "arn:aws:acm-pca:region:account:certificate-authority/12345678-1234-1234-1234-123456789012"

// TestRun starts the command on port 0, finds it through --address-file,
// talks to it with the SDK and stops it by cancelling the context (what
// SIGINT/SIGTERM do).
func TestRun(t *testing.T) {
	dir := t.TempDir()
	addrFile := filepath.Join(dir, "addr")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"run", "--address", "127.0.0.1:0", "--address-file", addrFile,
			"--state-dir", filepath.Join(dir, "state"), "--in-progress", "0s", "--log-level", "warn",
			"--ca", "arn=" + testARN + ",type=ROOT,key=EC_prime256v1,mode=GENERAL_PURPOSE,status=ACTIVE",
			"--credentials", "AKID:SECRET", "--issue-rate", "5"}, &stdout, &stderr)
	}()
	var addr string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(addrFile); err == nil {
			addr = strings.TrimSpace(string(b))
			break
		}
	}
	if addr == "" {
		cancel()
		t.Fatalf("no address file; err=%v stderr=%s", <-done, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "state", "12345678-1234-1234-1234-123456789012-chain.pem")); err != nil {
		t.Fatal(err)
	}
	client := acmpca.New(acmpca.Options{Region: "us-east-1", BaseEndpoint: aws.String("http://" + addr),
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")})
	out, err := client.DescribeCertificateAuthority(ctx, &acmpca.DescribeCertificateAuthorityInput{CertificateAuthorityArn: aws.String(testARN)})
	if err != nil {
		t.Fatal(err)
	}
	if out.CertificateAuthority.Status != "ACTIVE" {
		t.Fatalf("status %s", out.CertificateAuthority.Status)
	}
	resp, err := http.Get("http://" + addr + "/_acmpca-local/rates")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var rates map[string]float64
	if err := json.Unmarshal(body, &rates); err != nil || rates["IssueCertificate"] != 5 || rates["GetCertificate"] != 75 {
		t.Fatalf("rates: %v %s", err, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop")
	}
	if !strings.Contains(stdout.String(), "listening on "+addr) {
		t.Errorf("stdout: %q", stdout.String())
	}
}

func TestRunUsageErrors(t *testing.T) {
	for _, args := range [][]string{{}, {"serve"}, {"run"}, {"run", "extra"}, {"run", "--bogus"}, {"run", "--state-dir", "x", "--error-rate", "2"}, {"run", "--state-dir", "x", "--ca", "arn=bad"}} {
		err := run(context.Background(), args, io.Discard, io.Discard)
		if err == nil || exitCode(err) != 2 {
			t.Errorf("run(%q) = %v, want usage error", args, err)
		}
	}
}

func TestHelpAndVersion(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"run", "--help"}, {"help", "run"}} {
		var stdout bytes.Buffer
		if err := run(context.Background(), args, &stdout, io.Discard); err != nil {
			t.Errorf("run(%q) = %v, want success", args, err)
		}
		if !strings.Contains(stdout.String(), "--state-dir") && !strings.Contains(stdout.String(), "run") {
			t.Errorf("run(%q) printed no usage: %q", args, stdout.String())
		}
	}
	var stdout bytes.Buffer
	if err := run(context.Background(), []string{"version"}, &stdout, io.Discard); err != nil || strings.TrimSpace(stdout.String()) != version {
		t.Errorf("version: %v %q", err, stdout.String())
	}
}
