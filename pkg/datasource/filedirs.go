package datasource

import (
	"errors"
	"io/fs"
	"path/filepath"
	"strings"

	"meshca/pkg/api"
)

// WithFileDirs confines `file:` DataSources to dirs (and what is below
// them): a path outside, also by a symbolic link, is an error naming the
// field. No dirs (the default, as in Kuma) allows any path.
func (r *Resolver) WithFileDirs(dirs []string) *Resolver {
	c := *r
	c.fileDirs = nil
	for _, d := range dirs {
		if d = strings.TrimSpace(d); d != "" {
			c.fileDirs = append(c.fileDirs, d)
		}
	}
	return &c
}

// checkFileDir refuses a file outside the allowed directories.
func (r *Resolver) checkFileDir(field, path string) error {
	if len(r.fileDirs) == 0 {
		return nil
	}
	real, err := realPath(path)
	if err != nil {
		return api.FieldErr(field, "cannot resolve file %q: %v", path, err)
	}
	for _, d := range r.fileDirs {
		dir, err := realPath(d)
		if err != nil {
			continue
		}
		if rel, err := filepath.Rel(dir, real); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return nil
		}
	}
	return api.FieldErr(field, "file %q is outside the directories the control plane may read DataSource files from (--datasource-file-dirs %s)",
		path, strings.Join(r.fileDirs, ","))
}

// realPath is the absolute path with every symbolic link resolved; a path
// that does not exist is only cleaned (reading it then reports that).
func realPath(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	real, err := filepath.EvalSymlinks(abs)
	if errors.Is(err, fs.ErrNotExist) {
		return filepath.Clean(abs), nil
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return "", pe.Err
	}
	return real, err
}
