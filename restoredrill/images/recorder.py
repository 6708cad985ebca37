"""The S3 request recorder: a reverse proxy a test puts in front of an object store to prove what a
client asked of it (the production-backup drill: zero writes, zero deletes).

A one-file Go program (standard library only, so it builds offline like the app stand-ins) built
with the local toolchain and packed into a scratch image. It is a test harness piece, not part of
the platform: no image set lists it and `DEFAULT_LOCAL_IMAGES` does not build it; the test that
uses it loads it with `provider.load_images(build_recorder_image())` and runs
`image=RECORDER_REFERENCE` (restoredrill.platform.recorder has the manifests and the log parser).

Environment: RECORDER_UPSTREAM (the store's URL, e.g. http://minio.NS.svc.cluster.local:9000) and
RECORDER_LISTEN (default `:9000`; `127.0.0.1:0` picks a free port). Every line on stdout is one JSON
object with an `event`: `listening` (address, upstream) first, then one `request` per request
after its response, `stopping` on SIGTERM, `server-error`/`proxy-error` for what net/http logs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from restoredrill.images import build_unlisted_image, register_image, static_binary_image
from restoredrill.images.oci import ImageSpec
from restoredrill.images.standins import go_program_binary
from restoredrill.toolchain.gobuild import GoToolchain

__all__ = ["RECORDER_IMAGE", "RECORDER_MAIN_GO", "RECORDER_PATH", "RECORDER_REFERENCE", "build_recorder_image",
           "recorder_binary", "recorder_image"]

RECORDER_MAIN_GO = """\
// restoredrill s3-recorder: forwards every request to RECORDER_UPSTREAM and writes one JSON line
// per request to stdout, so a test can prove which requests reached the store.
package main

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type requestRecord struct {
	Event        string  `json:"event"`
	Time         string  `json:"time"`
	DurationMS   float64 `json:"duration_ms"`
	Method       string  `json:"method"`
	Host         string  `json:"host"`
	Path         string  `json:"path"`
	RawQuery     string  `json:"raw_query"`
	Status       int     `json:"status"`
	Bytes        int64   `json:"bytes"`
	RequestBytes int64   `json:"request_bytes"`
	RemoteAddr   string  `json:"remote_addr"`
	UserAgent    string  `json:"user_agent"`
	Error        string  `json:"error,omitempty"`
	Kept         bool    `json:"kept,omitempty"`
}

var stdout sync.Mutex

// emit writes one JSON line; the lock keeps the lines of concurrent requests whole.
func emit(record any) {
	line, err := json.Marshal(record)
	if err != nil {
		line = []byte(fmt.Sprintf(`{"event":"server-error","message":%q}`, err.Error()))
	}
	stdout.Lock()
	defer stdout.Unlock()
	os.Stdout.Write(append(line, '\\n'))
}

// eventLog turns what net/http and ReverseProxy log into JSON lines, so stdout stays parseable.
type eventLog string

func (e eventLog) Write(p []byte) (int, error) {
	emit(map[string]string{"event": string(e), "message": strings.TrimSpace(string(p))})
	return len(p), nil
}

// recordingWriter notes the final status and the body bytes sent to the client.
type recordingWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
	err    string
	kept   bool // answered by the shield, not forwarded
}

func (w *recordingWriter) WriteHeader(code int) {
	// 1xx responses (100 Continue, 103 Early Hints) are interim: the final status comes later.
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController, which ReverseProxy flushes through, reach the connection.
func (w *recordingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// countingBody counts the request body bytes forwarded; the transport reads it in its own goroutine.
type countingBody struct {
	io.ReadCloser
	n atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// ---- the shield (RECORDER_SHIELD=keep-writes) ----------------------------------------------------
// A client that must read a store it may never write (Velero restoring from a ReadOnly location
// still uploads the restore's log and results into it) is given the shield: reads go on to the
// store, writes never do. A PUT is kept in memory and answered as the store would; a GET or HEAD
// of a kept object is answered from memory; a DELETE of one forgets it; anything else that writes
// (multipart uploads, copies, POST, other methods) is refused with 403. Kept objects live as long
// as the process.
type keptObject struct {
	body        []byte
	contentType string
	etag        string
	modified    time.Time
}

type shield struct {
	next    http.Handler
	mu      sync.Mutex
	objects map[string]*keptObject
}

func markKept(w http.ResponseWriter) {
	if rec, ok := w.(*recordingWriter); ok {
		rec.kept = true
	}
}

func refuse(w http.ResponseWriter, why string) {
	markKept(w)
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(http.StatusForbidden)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>`+
		"<Message>restoredrill shield: %s</Message></Error>", why)
}

// decodeAWSChunked reads an aws-chunked body (SigV4 streaming uploads): "<hex size>[;ext]\\r\\n<data>\\r\\n"
// chunks up to a zero-size one, then trailers.
func decodeAWSChunked(body []byte) ([]byte, error) {
	var out []byte
	for {
		end := strings.Index(string(body), "\\r\\n")
		if end < 0 {
			return nil, fmt.Errorf("aws-chunked body: no chunk header")
		}
		header := string(body[:end])
		if semi := strings.IndexByte(header, ';'); semi >= 0 {
			header = header[:semi]
		}
		var size int
		if _, err := fmt.Sscanf(strings.TrimSpace(header), "%x", &size); err != nil {
			return nil, fmt.Errorf("aws-chunked body: chunk size %q: %v", header, err)
		}
		body = body[end+2:]
		if size == 0 {
			return out, nil
		}
		if len(body) < size {
			return nil, fmt.Errorf("aws-chunked body: chunk of %d bytes, %d left", size, len(body))
		}
		out = append(out, body[:size]...)
		body = body[size:]
		body = []byte(strings.TrimPrefix(string(body), "\\r\\n"))
	}
}

func (s *shield) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := r.URL.Path
	query := r.URL.Query()
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		s.mu.Lock()
		object := s.objects[key]
		s.mu.Unlock()
		if object == nil { // a listing names the bucket, never a kept object's path
			s.next.ServeHTTP(w, r)
			return
		}
		markKept(w)
		h := w.Header()
		h.Set("Content-Type", object.contentType)
		h.Set("ETag", object.etag)
		h.Set("Last-Modified", object.modified.UTC().Format(http.TimeFormat))
		h.Set("Content-Length", fmt.Sprint(len(object.body)))
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			w.Write(object.body)
		}
	case http.MethodPut:
		if query.Has("uploadId") || query.Has("partNumber") || r.Header.Get("X-Amz-Copy-Source") != "" {
			refuse(w, "multipart uploads and copies are not kept")
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			refuse(w, "the body could not be read: "+err.Error())
			return
		}
		if strings.Contains(r.Header.Get("Content-Encoding"), "aws-chunked") ||
			strings.HasPrefix(r.Header.Get("X-Amz-Content-Sha256"), "STREAMING-") {
			if body, err = decodeAWSChunked(body); err != nil {
				refuse(w, err.Error())
				return
			}
		}
		sum := md5.Sum(body)
		object := &keptObject{body: body, contentType: r.Header.Get("Content-Type"),
			etag: fmt.Sprintf("%q", hex.EncodeToString(sum[:])), modified: time.Now()}
		s.mu.Lock()
		s.objects[key] = object
		s.mu.Unlock()
		markKept(w)
		w.Header().Set("ETag", object.etag)
		w.WriteHeader(http.StatusOK)
	case http.MethodDelete:
		s.mu.Lock()
		delete(s.objects, key)
		s.mu.Unlock()
		markKept(w)
		w.WriteHeader(http.StatusNoContent)
	default:
		refuse(w, r.Method+" is a write and is never forwarded")
	}
}

func record(proxy http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started := time.Now()
		rec := &recordingWriter{ResponseWriter: w}
		var body *countingBody
		if r.Body != nil && r.Body != http.NoBody {
			body = &countingBody{ReadCloser: r.Body}
			r.Body = body
		}
		// Deferred, so that a request ReverseProxy aborts (it panics with http.ErrAbortHandler when
		// the upstream breaks off mid-body) is recorded too; the panic then goes on to net/http.
		defer func() {
			aborted := recover()
			entry := requestRecord{
				Event:      "request",
				Time:       started.UTC().Format(time.RFC3339Nano),
				DurationMS: float64(time.Since(started).Microseconds()) / 1000,
				Method:     r.Method,
				Host:       r.Host,
				Path:       r.URL.Path,
				RawQuery:   r.URL.RawQuery,
				Status:     rec.status,
				Bytes:      rec.bytes,
				RemoteAddr: r.RemoteAddr,
				UserAgent:  r.UserAgent(),
				Error:      rec.err,
				Kept:       rec.kept,
			}
			if body != nil {
				entry.RequestBytes = body.n.Load()
			}
			if aborted != nil && entry.Error == "" {
				entry.Error = fmt.Sprint("aborted: ", aborted)
			}
			if entry.Status == 0 && aborted == nil {
				entry.Status = http.StatusOK // what net/http sends for a handler that wrote nothing
			}
			emit(entry)
			if aborted != nil {
				panic(aborted)
			}
		}()
		proxy.ServeHTTP(rec, r)
	})
}

func main() {
	upstream := os.Getenv("RECORDER_UPSTREAM")
	target, err := url.Parse(upstream)
	if err != nil || target.Scheme == "" || target.Host == "" {
		fmt.Fprintf(os.Stderr, "s3-recorder: RECORDER_UPSTREAM=%q is not an absolute URL like http://host:9000\\n",
			upstream)
		os.Exit(2)
	}
	listen := os.Getenv("RECORDER_LISTEN")
	if listen == "" {
		listen = ":9000"
	}
	// NewSingleHostReverseProxy's director sets only the outgoing URL's scheme, host and path
	// (joined with the upstream's, empty here) and leaves req.Host alone, so the Host header the
	// store sees is the one the client sent and signed (SigV4 signs Host and the raw path and
	// query). The director also leaves the raw query as sent. The Rewrite hook, which Go now
	// prefers to the (deprecated, still supported) Director, would not: ProxyRequest.SetURL sets
	// Host to the upstream's, and Rewrite re-encodes the query (sorted by url.Values.Encode) when
	// it finds it unsafe, and always under the GODEBUG defaults of this go.mod's `go 1.22`;
	// either breaks the client's signature. tests/test_recorder.py checks Host and raw query.
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.FlushInterval = -1 // bodies stream: every chunk read from the store goes on at once
	proxy.ErrorLog = log.New(eventLog("proxy-error"), "", 0)
	proxy.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		if rec, ok := w.(*recordingWriter); ok {
			rec.err = err.Error()
		}
		w.WriteHeader(http.StatusBadGateway)
	}
	listener, err := net.Listen("tcp", listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "s3-recorder:", err)
		os.Exit(1)
	}
	emit(map[string]string{"event": "listening", "address": listener.Addr().String(), "upstream": upstream,
		"shield": os.Getenv("RECORDER_SHIELD")})
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		sig := <-stop
		emit(map[string]string{"event": "stopping", "signal": sig.String()})
		os.Exit(0)
	}()
	var handler http.Handler = proxy
	mode := os.Getenv("RECORDER_SHIELD")
	switch mode {
	case "":
	case "keep-writes":
		handler = &shield{next: proxy, objects: map[string]*keptObject{}}
	default:
		fmt.Fprintf(os.Stderr, "s3-recorder: RECORDER_SHIELD=%q: the one mode is keep-writes\\n", mode)
		os.Exit(2)
	}
	server := &http.Server{Handler: record(handler), ErrorLog: log.New(eventLog("server-error"), "", 0),
		ReadHeaderTimeout: time.Minute}
	err = server.Serve(listener)
	fmt.Fprintln(os.Stderr, "s3-recorder:", err)
	os.Exit(1)
}
"""

RECORDER_IMAGE = "s3-recorder"  # the logical name
RECORDER_PATH = "/usr/local/bin/s3-recorder"
# Tagged with the program's digest: a changed recorder is a new image, never a stale one that
# `imagePullPolicy: IfNotPresent` would keep running.
RECORDER_REFERENCE = f"restoredrill.local/s3-recorder:{hashlib.sha256(RECORDER_MAIN_GO.encode()).hexdigest()[:12]}"


def recorder_binary(*, cache: Path | None = None) -> Path:
    """The recorder, built once (per source digest) with the local Go toolchain."""
    return go_program_binary(RECORDER_MAIN_GO, name="s3-recorder", binary="s3-recorder", cache=cache)


@register_image(RECORDER_IMAGE)
def recorder_image(toolchain: GoToolchain, reference: str) -> ImageSpec:
    # Scratch plus one static binary: Go's own resolver reads the /etc/resolv.conf the kubelet mounts.
    return static_binary_image(reference, recorder_binary(cache=toolchain.cache), path=RECORDER_PATH)


def build_recorder_image(*, cache: Path | None = None) -> dict[str, Path]:
    """{"s3-recorder": its OCI archive in `CACHE/images/`}, for `ClusterProvider.load_images` (the
    archive holds RECORDER_REFERENCE); rebuilt only when the program changed. Serialised with a file
    lock: xdist workers share the cache."""
    return build_unlisted_image(RECORDER_IMAGE, RECORDER_REFERENCE, cache=cache)
