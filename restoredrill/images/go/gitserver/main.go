// restoredrill git-server: bare repositories under one folder, served read-only over git's smart
// HTTP protocol (what Flux's source-controller, a go-git client, speaks), with go-git's own server.
package main

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5/plumbing/format/pktline"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/server"
)

type statusWriter struct {
	http.ResponseWriter
	status int
	why    string
}

// fail answers with status and message, which the request's log line repeats.
func fail(w *statusWriter, message string, status int) {
	w.why = message
	http.Error(w, message, status)
}

func (w *statusWriter) WriteHeader(status int) {
	w.status = status
	w.ResponseWriter.WriteHeader(status)
}

// repository is the repository of a request for /git/NAME.git/... ("/NAME.git" under the root) and
// what is asked of it ("" when the request is not one of git's).
func repository(urlPath string) (string, string) {
	clean := path.Clean("/" + urlPath)
	if !strings.HasPrefix(clean, "/git/") {
		return "", ""
	}
	clean = strings.TrimPrefix(clean, "/git")
	for _, suffix := range []string{"/info/refs", "/git-upload-pack", "/git-receive-pack"} {
		if strings.HasSuffix(clean, suffix) {
			return strings.TrimSuffix(clean, suffix), suffix[1:]
		}
	}
	return clean, ""
}

func serve(root, listen string) error {
	git := server.NewServer(server.NewFilesystemLoader(osfs.New(root)))
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			if sw.why != "" {
				log.Printf("%s %s %d: %s", r.Method, r.URL.RequestURI(), sw.status, sw.why)
			} else {
				log.Printf("%s %s %d", r.Method, r.URL.RequestURI(), sw.status)
			}
		}()
		repo, action := repository(r.URL.Path)
		if action == "" {
			fail(sw, "not a git smart HTTP request: this server answers /git/NAME.git/info/refs and "+
				"/git/NAME.git/git-upload-pack", http.StatusNotFound)
			return
		}
		endpoint, err := transport.NewEndpoint(repo)
		if err != nil {
			fail(sw, err.Error(), http.StatusBadRequest)
			return
		}
		switch {
		case action == "info/refs" && r.Method == http.MethodGet:
			if service := r.URL.Query().Get("service"); service != "git-upload-pack" {
				if service == "git-receive-pack" {
					fail(sw, "read-only: pushes are refused", http.StatusForbidden)
					return
				}
				fail(sw, "read-only: only git-upload-pack is served (dumb HTTP is not)", http.StatusForbidden)
				return
			}
			session, err := git.NewUploadPackSession(endpoint, nil)
			if err != nil {
				notFound(sw, repo, err)
				return
			}
			refs, err := session.AdvertisedReferencesContext(r.Context())
			if err != nil {
				notFound(sw, repo, err)
				return
			}
			// go-git's server has no shallow support; this one serves shallow requests itself (see shallow).
			if err := refs.Capabilities.Set(capability.Shallow); err != nil {
				fail(sw, err.Error(), http.StatusInternalServerError)
				return
			}
			refs.Prefix = [][]byte{[]byte("# service=git-upload-pack"), pktline.Flush}
			sw.Header().Set("Content-Type", "application/x-git-upload-pack-advertisement")
			sw.Header().Set("Cache-Control", "no-cache")
			if err := refs.Encode(sw); err != nil {
				log.Printf("%s: advertising references: %v", repo, err)
			}
		case action == "git-upload-pack" && r.Method == http.MethodPost:
			body := io.Reader(r.Body)
			if r.Header.Get("Content-Encoding") == "gzip" {
				unzipped, err := gzip.NewReader(r.Body)
				if err != nil {
					fail(sw, err.Error(), http.StatusBadRequest)
					return
				}
				defer unzipped.Close()
				body = unzipped
			}
			request := packp.NewUploadPackRequest()
			if err := request.Decode(body); err != nil {
				fail(sw, "bad upload-pack request: "+err.Error(), http.StatusBadRequest)
				return
			}
			shallowRequest, err := shallow(filepath.Join(root, filepath.FromSlash(repo)), request)
			if err != nil {
				fail(sw, err.Error(), http.StatusBadRequest)
				return
			}
			session, err := git.NewUploadPackSession(endpoint, nil)
			if err != nil {
				notFound(sw, repo, err)
				return
			}
			response, err := session.UploadPack(r.Context(), request)
			if err != nil {
				fail(sw, "upload-pack: "+err.Error(), http.StatusInternalServerError)
				return
			}
			defer response.Close()
			sw.Header().Set("Content-Type", "application/x-git-upload-pack-result")
			sw.Header().Set("Cache-Control", "no-cache")
			if shallowRequest {
				// The shallow-update section the client waits for: empty, the history is whole.
				if err := (&packp.ShallowUpdate{}).Encode(sw); err != nil {
					log.Printf("%s: %v", repo, err)
					return
				}
			}
			if err := response.Encode(sw); err != nil {
				log.Printf("%s: sending the pack: %v", repo, err)
			}
		case action == "git-receive-pack":
			fail(sw, "read-only: pushes are refused", http.StatusForbidden)
		default:
			fail(sw, r.Method+" "+action+" is not served", http.StatusMethodNotAllowed)
		}
	})
	httpServer := &http.Server{Addr: listen, Handler: handler, ReadHeaderTimeout: time.Minute}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = httpServer.Shutdown(ctx)
	}()
	fmt.Printf("git-server: serving %s on %s\n", root, listen)
	if err := httpServer.ListenAndServe(); err != http.ErrServerClosed {
		return err
	}
	return nil
}

func notFound(w *statusWriter, repo string, err error) {
	if err == transport.ErrRepositoryNotFound {
		fail(w, repo+": no such repository", http.StatusNotFound)
		return
	}
	fail(w, repo+": "+err.Error(), http.StatusInternalServerError)
}

// fetch writes the body of a GET of url to stdout (a 2xx answer only), byte for byte: no
// transparent gunzip (Velero's downloads are gzip files the caller unpacks).
func fetch(url string) error {
	client := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{DisableCompression: true}}
	response, err := client.Get(url)
	if err != nil {
		return err
	}
	defer response.Body.Close()
	if response.StatusCode/100 != 2 {
		return fmt.Errorf("GET %s: %s", url, response.Status)
	}
	_, err = io.Copy(os.Stdout, response.Body)
	return err
}

func main() {
	log.SetFlags(0)
	args := os.Args[1:]
	var err error
	switch {
	case len(args) == 3 && args[0] == "publish":
		err = publish(args[1], args[2])
	case len(args) == 2 && args[0] == "fetch":
		err = fetch(args[1])
	case len(args) == 2:
		err = serve(args[0], args[1])
	default:
		fmt.Fprintln(os.Stderr, "usage: git-server ROOT LISTEN | git-server publish ROOT NAME < TAR | git-server fetch URL")
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "git-server:", err)
		os.Exit(1)
	}
}
