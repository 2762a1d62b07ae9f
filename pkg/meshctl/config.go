package meshctl

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"

	"meshca/pkg/atomicfile"
)

// EnvConfigFile names the environment variable holding the config file path.
const EnvConfigFile = "MESHCTL_CONFIG"

// AuthTypeTokens is the auth type of a control plane reached with a user token.
const AuthTypeTokens = "tokens"

// ConfigFile is meshctl's configuration (~/.meshctl/config, 0600): the
// control planes it knows and the current one, in kumactl's shape.
type ConfigFile struct {
	ControlPlanes  []ControlPlane `json:"controlPlanes,omitempty"`
	Contexts       []Context      `json:"contexts,omitempty"`
	CurrentContext string         `json:"currentContext,omitempty"`
}

// ControlPlane is one control plane's coordinates.
type ControlPlane struct {
	Name        string      `json:"name"`
	Coordinates Coordinates `json:"coordinates"`
}

// Coordinates say how to reach and authenticate to a control plane.
type Coordinates struct {
	APIServer APIServer `json:"apiServer"`
}

// APIServer is a control plane's API address and credentials.
type APIServer struct {
	URL        string            `json:"url"`
	CACertFile string            `json:"caCertFile,omitempty"`
	AuthType   string            `json:"authType,omitempty"`
	AuthConf   map[string]string `json:"authConf,omitempty"`
}

// Context points at a control plane.
type Context struct {
	Name         string `json:"name"`
	ControlPlane string `json:"controlPlane"`
}

// DefaultConfigFile is ~/.meshctl/config.
func DefaultConfigFile() string {
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(".meshctl", "config")
	}
	return filepath.Join(home, ".meshctl", "config")
}

// LoadConfigFile reads path; a missing file is an empty configuration.
func LoadConfigFile(path string) (*ConfigFile, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &ConfigFile{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("meshctl config %s: %w", path, err)
	}
	var c ConfigFile
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return nil, fmt.Errorf("meshctl config %s: %w", path, err)
	}
	return &c, nil
}

// Save writes the configuration to path, 0600 (it holds tokens), in a
// directory created 0700.
func (c *ConfigFile) Save(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("meshctl config: %w", err)
	}
	data, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		return fmt.Errorf("meshctl config %s: %w", path, err)
	}
	return nil
}

// Current returns the control plane of the current context.
func (c *ConfigFile) Current() (ControlPlane, bool) {
	for _, ctx := range c.Contexts {
		if ctx.Name == c.CurrentContext {
			return c.Find(ctx.ControlPlane)
		}
	}
	return ControlPlane{}, false
}

// Find returns the control plane called name.
func (c *ConfigFile) Find(name string) (ControlPlane, bool) {
	for _, cp := range c.ControlPlanes {
		if cp.Name == name {
			return cp, true
		}
	}
	return ControlPlane{}, false
}

// normalizeAPIURL accepts an address without a scheme ("127.0.0.1:5681",
// as MESHCTL_API is often written) as plain HTTP.
func normalizeAPIURL(s string) string {
	if s != "" && !strings.Contains(s, "://") {
		return "http://" + s
	}
	return s
}

// Client returns a client of the API chosen by --api / MESHCTL_API, else
// by the current control plane of the config file, else DefaultAPI.
func (a *App) Client() (*Client, error) {
	if a.apiFromUser() {
		return NewClient(a.apiURL, a.cfg.HTTPClient)
	}
	cfg, err := LoadConfigFile(a.configFile)
	if err != nil {
		return nil, err
	}
	cp, ok := cfg.Current()
	if !ok {
		return NewClient(a.apiURL, a.cfg.HTTPClient)
	}
	return a.clientFor(cp)
}

// apiFromUser reports whether the API address was given explicitly.
func (a *App) apiFromUser() bool {
	if a.cfg.Getenv(EnvAPI) != "" {
		return true
	}
	f := a.root.PersistentFlags().Lookup("api")
	return f != nil && f.Changed
}

// clientFor returns a client of a configured control plane: its CA (if
// any) is trusted and its token sent.
func (a *App) clientFor(cp ControlPlane) (*Client, error) {
	s := cp.Coordinates.APIServer
	hc := a.cfg.HTTPClient
	if s.CACertFile != "" {
		pem, err := os.ReadFile(s.CACertFile)
		if err != nil {
			return nil, fmt.Errorf("control plane %q: caCertFile: %w", cp.Name, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("control plane %q: caCertFile %s holds no PEM certificate", cp.Name, s.CACertFile)
		}
		base, _ := http.DefaultTransport.(*http.Transport)
		if t, ok := hc.Transport.(*http.Transport); ok {
			base = t
		}
		tr := base.Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		c := *hc
		c.Transport = tr
		hc = &c
	}
	client, err := NewClient(s.URL, hc)
	if err != nil {
		return nil, fmt.Errorf("control plane %q: %w", cp.Name, err)
	}
	switch s.AuthType {
	case "":
	case AuthTypeTokens:
		client.token = s.AuthConf["token"]
	default:
		return nil, fmt.Errorf("control plane %q: unknown authType %q: must be %q", cp.Name, s.AuthType, AuthTypeTokens)
	}
	return client, nil
}
