"""The chart server: the Helm charts a user gives with `--charts-dir`, served inside the drill
cluster as the chart sources the repo's HelmReleases name, so HelmRelease apps deploy offline.

A Go program (standard library only, so it builds offline like the app stand-ins) in a
scratch image. It serves one folder, laid out on the host by `restoredrill.drill.charts`:
- `http/`: a Helm HTTP repository (`index.yaml` and the `.tgz` files), for HelmRepository objects
  (`spec.type: default`), under `/helm/`;
- `oci/`: a read-only OCI distribution API (`/v2/`): `oci/NAME/manifests/REF` (a tag or a digest),
  `oci/blobs/DIGEST` and the tag list made from `oci/NAME/manifests/`, for OCIRepository objects and
  HelmRepository objects of `type: oci` (source-controller pulls them with go-containerregistry and
  Helm's registry client, which need the OCI media types and `Docker-Content-Digest`).

`chart-server untar DIR` extracts a tar read on stdin into DIR (the image has no tar of its own):
the drill streams the layout in with `kubectl exec -i`, as it does for the git server. Every
request is logged on stdout as one line (method, path, status).
"""

from __future__ import annotations

from pathlib import Path

from restoredrill.images import build_unlisted_image, register_image, static_binary_image
from restoredrill.images.gitserver import GO_DIR
from restoredrill.images.oci import DirEntry, ImageSpec
from restoredrill.images.standins import go_program_binary, program_digest
from restoredrill.toolchain.gobuild import GoToolchain

__all__ = ["CHART_SERVER_IMAGE", "CHART_SERVER_MAIN_GO", "CHART_SERVER_PATH", "CHART_SERVER_REFERENCE",
           "CHART_SERVER_ROOT", "build_chart_server_image", "chart_server_binary"]

CHART_SERVER_MAIN_GO = """\
// restoredrill chart-server: a Helm HTTP repository and a read-only OCI registry over one folder.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

const manifestType = "application/vnd.oci.image.manifest.v1+json"

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	w.status = status
	w.ResponseWriter.WriteHeader(status)
}

func ociError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": message}}})
}

// safe is false for a name or reference that could leave the served folder.
func safe(part string) bool {
	return part != "" && !strings.Contains(part, "..") && !strings.HasPrefix(part, "/")
}

func serveFile(w http.ResponseWriter, r *http.Request, path, contentType, code string) {
	data, err := os.ReadFile(path)
	if err != nil {
		ociError(w, http.StatusNotFound, code, "not found")
		return
	}
	sum := sha256.Sum256(data)
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Docker-Content-Digest", "sha256:"+hex.EncodeToString(sum[:]))
	w.Header().Set("Content-Length", fmt.Sprint(len(data)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(data)
	}
}

func registry(root string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		rest := strings.TrimPrefix(r.URL.Path, "/v2/")
		if rest == "" {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte("{}"))
			return
		}
		if name, ok := strings.CutSuffix(rest, "/tags/list"); ok && safe(name) {
			entries, err := os.ReadDir(filepath.Join(root, "oci", name, "manifests"))
			if err != nil {
				ociError(w, http.StatusNotFound, "NAME_UNKNOWN", "repository "+name+" is not served")
				return
			}
			tags := []string{}
			for _, entry := range entries {
				if !strings.HasPrefix(entry.Name(), "sha256:") {
					tags = append(tags, entry.Name())
				}
			}
			sort.Strings(tags)
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]any{"name": name, "tags": tags})
			return
		}
		if i := strings.LastIndex(rest, "/manifests/"); i > 0 {
			name, ref := rest[:i], rest[i+len("/manifests/"):]
			if safe(name) && safe(ref) && !strings.Contains(ref, "/") {
				serveFile(w, r, filepath.Join(root, "oci", name, "manifests", ref), manifestType, "MANIFEST_UNKNOWN")
				return
			}
		}
		if i := strings.LastIndex(rest, "/blobs/"); i > 0 {
			digest := rest[i+len("/blobs/"):]
			if safe(digest) && !strings.Contains(digest, "/") {
				serveFile(w, r, filepath.Join(root, "oci", "blobs", digest), "application/octet-stream", "BLOB_UNKNOWN")
				return
			}
		}
		ociError(w, http.StatusNotFound, "UNSUPPORTED", "not served: "+r.URL.Path)
	}
}

func serve(root, listen string) error {
	mux := http.NewServeMux()
	mux.Handle("/helm/", http.StripPrefix("/helm/", http.FileServer(http.Dir(filepath.Join(root, "http")))))
	mux.HandleFunc("/v2/", registry(root))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		recorded := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			ociError(recorded, http.StatusMethodNotAllowed, "UNSUPPORTED", "read-only")
		} else {
			mux.ServeHTTP(recorded, r)
		}
		fmt.Printf("%s %s %s %d\\n", time.Now().UTC().Format(time.RFC3339), r.Method, r.URL.Path, recorded.status)
	})
	server := &http.Server{Addr: listen, Handler: handler, ReadHeaderTimeout: time.Minute}
	fmt.Printf("chart-server: serving %s on %s\\n", root, listen)
	return server.ListenAndServe()
}

func main() {
	log.SetFlags(0)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		os.Exit(0)
	}()
	args := os.Args[1:]
	if len(args) == 2 && args[0] == "untar" {
		if err := untar(os.Stdin, args[1]); err != nil {
			fmt.Fprintln(os.Stderr, "chart-server untar:", err)
			os.Exit(1)
		}
		return
	}
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: chart-server ROOT LISTEN | chart-server untar ROOT")
		os.Exit(2)
	}
	if err := serve(args[0], args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "chart-server:", err)
		os.Exit(1)
	}
}
"""

CHART_SERVER_IMAGE = "chart-server"  # the logical name
CHART_SERVER_PATH = "/usr/local/bin/chart-server"
CHART_SERVER_ROOT = "/srv/charts"
# Tagged with the program's digest: a changed server is a new image, never a stale one that
# `imagePullPolicy: IfNotPresent` would keep running.
# Its untar is the git server's (restoredrill/images/go/untar.go).
CHART_SERVER_SOURCES = {"main.go": CHART_SERVER_MAIN_GO, "untar.go": (GO_DIR / "untar.go").read_text()}
CHART_SERVER_REFERENCE = f"restoredrill.local/chart-server:{program_digest(CHART_SERVER_SOURCES)}"


def chart_server_binary(*, cache: Path | None = None) -> Path:
    """The chart server, built once (per source digest) with the local Go toolchain."""
    return go_program_binary(CHART_SERVER_SOURCES, name="chart-server", binary="chart-server", cache=cache)


@register_image(CHART_SERVER_IMAGE)
def chart_server_image(toolchain: GoToolchain, reference: str) -> ImageSpec:
    spec = static_binary_image(reference, chart_server_binary(cache=toolchain.cache), path=CHART_SERVER_PATH)
    return ImageSpec(reference=reference, entries=(*spec.entries, DirEntry(CHART_SERVER_ROOT, mode=0o1777)),
                     entrypoint=(CHART_SERVER_PATH,), cmd=(CHART_SERVER_ROOT, ":8080"), user="65532:65532")


def build_chart_server_image(*, cache: Path | None = None) -> dict[str, Path]:
    """{"chart-server": its OCI archive}, for `ClusterProvider.load_images` (the archive holds
    CHART_SERVER_REFERENCE); rebuilt only when the program changed."""
    return build_unlisted_image(CHART_SERVER_IMAGE, CHART_SERVER_REFERENCE, cache=cache)
