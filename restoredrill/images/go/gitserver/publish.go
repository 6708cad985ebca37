package main

import (
	"fmt"
	"os"
	"path/filepath"
)

// publish replaces repository NAME.git under root by the one in the tar on stdin (whose top folder
// is NAME.git), extracted beside it first: a fetch sees the old repository or the new, never half.
func publish(root, name string) error {
	staging, err := os.MkdirTemp(root, ".publish-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(staging)
	if err := untar(os.Stdin, staging); err != nil {
		return err
	}
	made := filepath.Join(staging, name+".git")
	if _, err := os.Stat(filepath.Join(made, "HEAD")); err != nil {
		return fmt.Errorf("the tar holds no bare repository %s.git", name)
	}
	target := filepath.Join(root, name+".git")
	old := filepath.Join(staging, "old")
	if err := os.Rename(target, old); err != nil && !os.IsNotExist(err) {
		return err
	}
	return os.Rename(made, target)
}
