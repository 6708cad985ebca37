package main

import (
	"fmt"

	gogit "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
)

// shallow makes a shallow clone request (`--depth N`, what source-controller sends) one go-git's
// server accepts: it answers it only when every wanted commit's whole history is within the depth,
// so the full pack is the shallow one and no commit needs to be marked shallow. restoredrill
// publishes one commit, so a depth of 1 always is. Any other shallow request is refused, named.
// Whether the request was shallow is returned: its answer then starts with a shallow-update section.
func shallow(repoDir string, request *packp.UploadPackRequest) (bool, error) {
	if request.Depth == nil || request.Depth.IsZero() {
		return false, nil
	}
	depth, ok := request.Depth.(packp.DepthCommits)
	if !ok || len(request.Shallows) > 0 {
		return false, fmt.Errorf("only a fresh clone with --depth N is served shallow, not %T or a fetch into a shallow clone", request.Depth)
	}
	repo, err := gogit.PlainOpen(repoDir)
	if err != nil {
		return false, err
	}
	for _, want := range request.Wants {
		commit, err := repo.CommitObject(want)
		if err != nil {
			return false, fmt.Errorf("want %s: %w", want, err)
		}
		for level := 1; ; level++ {
			if commit.NumParents() == 0 {
				break
			}
			if level >= int(depth) {
				return false, fmt.Errorf("%s has more than %d commit(s) of history: this server serves only whole histories, ask without --depth", want, depth)
			}
			if commit, err = commit.Parent(0); err != nil {
				return false, err
			}
			// Only the first parent is followed: merges are never published here.
		}
	}
	request.Depth = packp.DepthCommits(0)
	request.Capabilities.Delete(capability.Shallow)
	return true, nil
}
