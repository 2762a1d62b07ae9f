package vault

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
)

// Vault's AWS auth method (auth/aws/login), as Vault's own Go helper and
// `vault login -method=aws` drive it, on aws-sdk-go-v2:
//
//   - IAM: the login carries an sts:GetCallerIdentity request signed with
//     the control plane's AWS credentials (the SDK's default chain: env,
//     shared files, web identity, ECS/EC2 roles). Vault sends it to STS to
//     learn who signed it. It is signed for us-east-1 and the global
//     endpoint https://sts.amazonaws.com/, Vault's default; with
//     iamServerIdHeader the X-Vault-AWS-IAM-Server-ID header is signed in,
//     so the request cannot be replayed against another Vault.
//   - EC2: the login carries the instance's PKCS#7-signed identity document
//     from the instance metadata service (IMDSv2; the SDK honours
//     AWS_EC2_METADATA_SERVICE_ENDPOINT) and a client nonce. Vault binds the
//     instance to the nonce of its first login and accepts re-authentication
//     only with the same one, so there is one nonce per control-plane
//     process, shared by every backend. After a restart the new nonce is
//     refused until the instance's access-list entry expires, unless the
//     role sets disallow_reauthentication or the entry is removed
//     (auth/aws/identity-accesslist/<instance id>); IAM auth has no such
//     state and is the better choice for control planes that restart.

const (
	stsRegion        = "us-east-1"
	stsURL           = "https://sts.amazonaws.com/"
	stsBody          = "Action=GetCallerIdentity&Version=2011-06-15"
	iamServerIDField = "X-Vault-AWS-IAM-Server-ID"
)

// awsLogin builds the body of a login at auth/aws/login.
type awsLogin struct {
	auth AWSAuth
}

// ec2Nonce is this process's EC2 re-authentication nonce.
var ec2Nonce = sync.OnceValue(func() string {
	return rand.Text()
})

func newAWSLogin(a AWSAuth) *awsLogin {
	return &awsLogin{auth: a}
}

// data returns the login request's body.
func (l *awsLogin) data(ctx context.Context) (map[string]any, error) {
	cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion(stsRegion))
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	var d map[string]any
	if l.auth.Type == AWSTypeEC2 {
		d, err = l.ec2Data(ctx, cfg)
	} else {
		d, err = l.iamData(ctx, cfg)
	}
	if err != nil {
		return nil, err
	}
	if l.auth.Role != "" {
		d["role"] = l.auth.Role
	}
	return d, nil
}

func (l *awsLogin) iamData(ctx context.Context, cfg aws.Config) (map[string]any, error) {
	if cfg.Credentials == nil {
		return nil, fmt.Errorf("no AWS credentials found (environment, shared files, or an instance or task role)")
	}
	creds, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		return nil, fmt.Errorf("retrieve AWS credentials: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, stsURL, strings.NewReader(stsBody))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	if l.auth.IAMServerIDHeader != "" {
		req.Header.Set(iamServerIDField, l.auth.IAMServerIDHeader)
	}
	sum := sha256.Sum256([]byte(stsBody))
	if err := v4.NewSigner().SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), "sts", stsRegion, time.Now()); err != nil {
		return nil, fmt.Errorf("sign sts:GetCallerIdentity: %w", err)
	}
	headers, err := json.Marshal(req.Header)
	if err != nil {
		return nil, err
	}
	enc := base64.StdEncoding.EncodeToString
	return map[string]any{
		"iam_http_request_method": req.Method,
		"iam_request_url":         enc([]byte(req.URL.String())),
		"iam_request_body":        enc([]byte(stsBody)),
		"iam_request_headers":     enc(headers),
	}, nil
}

func (l *awsLogin) ec2Data(ctx context.Context, cfg aws.Config) (map[string]any, error) {
	out, err := imds.NewFromConfig(cfg).GetDynamicData(ctx, &imds.GetDynamicDataInput{Path: "instance-identity/pkcs7"})
	if err != nil {
		return nil, fmt.Errorf("read the instance identity document from the EC2 metadata service: %w", err)
	}
	defer out.Content.Close()
	b, err := io.ReadAll(io.LimitReader(out.Content, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("read the instance identity document from the EC2 metadata service: %w", err)
	}
	pkcs7 := strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", "")
	if pkcs7 == "" {
		return nil, fmt.Errorf("the EC2 metadata service returned an empty instance identity document")
	}
	return map[string]any{"pkcs7": pkcs7, "nonce": ec2Nonce()}, nil
}
