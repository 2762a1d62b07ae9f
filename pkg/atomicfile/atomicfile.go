// Package atomicfile writes files so that a reader sees either the old
// content or the new one, never a partly written file. Key files keep the
// mode they are given (0600) from the moment they exist.
package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// File is one file of a set written together.
type File struct {
	Name string // relative to the directory
	Data []byte
	Perm os.FileMode
}

// Write replaces path with data atomically (temporary file in the same
// directory, fsync, rename, directory fsync).
func Write(path string, data []byte, perm os.FileMode) error {
	return WriteSet(filepath.Dir(path), File{Name: filepath.Base(path), Data: data, Perm: perm})
}

// WriteSet writes several files of dir as one change: every new content is
// written and synced to a temporary file first, then they are renamed into
// place back to back, in the order given, and the directory is synced once.
// A reader that opens them one by one can see a mix of old and new files only
// within those few renames. On error, nothing of the set that was not yet
// renamed is left behind.
func WriteSet(dir string, files ...File) error {
	tmps := make([]string, 0, len(files))
	defer func() {
		for _, t := range tmps {
			_ = os.Remove(t) // no-op for those already renamed
		}
	}()
	for _, f := range files {
		tmp, err := writeTemp(dir, f)
		if err != nil {
			return err
		}
		tmps = append(tmps, tmp)
	}
	for i, f := range files {
		if err := os.Rename(tmps[i], filepath.Join(dir, f.Name)); err != nil {
			return fmt.Errorf("write %s: %w", filepath.Join(dir, f.Name), err)
		}
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return errors.Join(d.Sync(), d.Close())
}

func writeTemp(dir string, f File) (string, error) {
	path := filepath.Join(dir, f.Name)
	tf, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(f.Name)+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	tmp := tf.Name()
	err = tf.Chmod(f.Perm)
	if err == nil {
		_, err = tf.Write(f.Data)
	}
	if err == nil {
		err = tf.Sync()
	}
	if cerr := tf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return tmp, nil
}
