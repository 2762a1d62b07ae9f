package meshctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"meshca/pkg/api"
	"meshca/pkg/apiserver"
)

// maxResponseBytes bounds what the client reads of one answer.
const maxResponseBytes = 64 << 20

// Client is a thin client of meshca's HTTP API (Kuma's REST shapes).
type Client struct {
	base  *url.URL
	http  *http.Client
	token string // user token sent as a Bearer credential, if any
}

// NewClient returns a client of the API at baseURL ("http://127.0.0.1:5681").
// hc nil means http.DefaultClient.
func NewClient(baseURL string, hc *http.Client) (*Client, error) {
	if baseURL != "" && !strings.Contains(baseURL, "://") {
		baseURL = "http://" + baseURL // host:port alone, as MESHCTL_API=127.0.0.1:5681
	}
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("API address %q: must be an http:// or https:// URL with a host, such as %s", baseURL, DefaultAPI)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	u.RawQuery, u.Fragment = "", ""
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: u, http: hc}, nil
}

// SetToken makes the client send token as its Bearer credential.
func (c *Client) SetToken(token string) { c.token = token }

// APIError is an error answer of the API, decoded from Kuma's error body.
type APIError struct {
	StatusCode int
	Title      string
	Detail     string
	Causes     []api.FieldError
}

// Error renders the detail (or title) on the first line, then one line per
// cause, `field: message`.
func (e *APIError) Error() string {
	var b strings.Builder
	switch {
	case e.Detail != "":
		b.WriteString(e.Detail)
	case e.Title != "":
		b.WriteString(e.Title)
	default:
		fmt.Fprintf(&b, "HTTP %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	}
	for _, c := range e.Causes {
		if c.Field == "" && c.Message == e.Detail {
			continue
		}
		b.WriteByte('\n')
		if c.Field != "" {
			b.WriteString(c.Field + ": ")
		}
		b.WriteString(c.Message)
	}
	return b.String()
}

func decodeAPIError(status int, body []byte) *APIError {
	e := &APIError{StatusCode: status}
	var eb apiserver.ErrorBody
	if json.Unmarshal(body, &eb) == nil && (eb.Title != "" || eb.Detail != "" || eb.Details != "") {
		e.Title = eb.Title
		e.Detail = eb.Detail
		if e.Detail == "" {
			e.Detail = eb.Details
		}
		for _, c := range eb.Causes {
			e.Causes = append(e.Causes, api.FieldError(c))
		}
		if len(e.Causes) == 0 {
			for _, p := range eb.InvalidParameters {
				e.Causes = append(e.Causes, api.FieldError{Field: p.Field, Message: p.Reason})
			}
		}
		return e
	}
	text := strings.TrimSpace(string(body))
	if len(text) > 200 {
		text = text[:200] + "..."
	}
	e.Title = http.StatusText(status)
	if text != "" {
		e.Detail = fmt.Sprintf("HTTP %d: %s", status, text)
	}
	return e
}

// URL returns the absolute URL of an API path ("/meshes/default").
func (c *Client) URL(path string, query url.Values) string {
	u := *c.base
	u.Path = c.base.Path + path
	u.RawQuery = query.Encode()
	return u.String()
}

// Do sends one request. in, when non-nil, is sent as JSON ([]byte as is);
// out, when non-nil, receives the JSON answer. A non-2xx answer is returned
// as an *APIError. The status code is returned in every case where an
// answer was received.
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, in, out any) (int, error) {
	var body io.Reader
	if in != nil {
		b, ok := in.([]byte)
		if !ok {
			var err error
			if b, err = json.Marshal(in); err != nil {
				return 0, fmt.Errorf("encode request: %w", err)
			}
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.URL(path, query), body)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("could not reach the meshca API at %s (set --api or MESHCTL_API): %w", c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, decodeAPIError(resp.StatusCode, data)
	}
	if raw, ok := out.(*[]byte); ok {
		*raw = data
		return resp.StatusCode, nil
	}
	if out != nil && len(bytes.TrimSpace(data)) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// ResourcePath is the (unescaped) API path of one resource, or of a list when name is
// empty. For a mesh-scoped type, mesh "" with name "" lists every mesh.
func ResourcePath(d api.Descriptor, mesh, name string) string {
	p := "/" + d.Path
	if d.MeshScoped && mesh != "" {
		p = "/meshes/" + mesh + p
	}
	if name != "" {
		p += "/" + name
	}
	return p
}

// Index returns the API's index document.
func (c *Client) Index(ctx context.Context) (apiserver.Index, error) {
	var idx apiserver.Index
	_, err := c.Do(ctx, http.MethodGet, "/", nil, nil, &idx)
	return idx, err
}

func decodeResource(d api.Descriptor, js []byte) (api.Resource, error) {
	r := d.New()
	if err := json.Unmarshal(js, r); err != nil {
		return nil, fmt.Errorf("decode %s: %w", d.Type, err)
	}
	return r, nil
}

// Get returns one resource.
func (c *Client) Get(ctx context.Context, d api.Descriptor, mesh, name string) (api.Resource, error) {
	var raw json.RawMessage
	if _, err := c.Do(ctx, http.MethodGet, ResourcePath(d, mesh, name), nil, nil, &raw); err != nil {
		return nil, err
	}
	return decodeResource(d, raw)
}

// List returns every resource of a type, following the pages. For a
// mesh-scoped type, mesh "" lists every mesh.
func (c *Client) List(ctx context.Context, d api.Descriptor, mesh string) ([]api.Resource, error) {
	path := ResourcePath(d, mesh, "")
	var out []api.Resource
	query := url.Values{}
	for seen := map[string]bool{}; ; {
		var page apiserver.ListBody
		if _, err := c.Do(ctx, http.MethodGet, path, query, nil, &page); err != nil {
			return nil, err
		}
		for _, it := range page.Items {
			r, err := decodeResource(d, it)
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
		if page.Next == nil || *page.Next == "" {
			return out, nil
		}
		// Follow the offset token of next on our own base URL: the server
		// may see itself under another address (proxies).
		next, err := url.Parse(*page.Next)
		if err != nil {
			return nil, fmt.Errorf("list %s: invalid next page URL %q: %w", d.Path, *page.Next, err)
		}
		query = next.Query()
		if seen[query.Encode()] {
			return nil, fmt.Errorf("list %s: the server returned the same page twice", d.Path)
		}
		seen[query.Encode()] = true
	}
}

// Apply creates or updates r (PUT). With dryRun the server only validates;
// created then tells whether r would be created.
func (c *Client) Apply(ctx context.Context, r api.Resource, dryRun bool) (created bool, err error) {
	d, err := api.DescriptorOf(r.GetMeta().Type)
	if err != nil {
		return false, err
	}
	body, err := json.Marshal(r)
	if err != nil {
		return false, fmt.Errorf("encode %s: %w", d.Type, err)
	}
	var q url.Values
	if dryRun {
		q = url.Values{"dryRun": {strconv.FormatBool(true)}}
	}
	var ab apiserver.ApplyBody
	status, err := c.Do(ctx, http.MethodPut, ResourcePath(d, r.GetMeta().Mesh, r.GetMeta().Name), q, body, &ab)
	if err != nil {
		return false, err
	}
	if dryRun {
		return ab.Created, nil
	}
	return status == http.StatusCreated, nil
}

// Delete removes one resource.
func (c *Client) Delete(ctx context.Context, d api.Descriptor, mesh, name string) error {
	_, err := c.Do(ctx, http.MethodDelete, ResourcePath(d, mesh, name), nil, nil, nil)
	return err
}

// IsNotFound reports whether err is a 404 answer of the API.
func IsNotFound(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.StatusCode == http.StatusNotFound
}
