// estargz-gen: turns a layer tar into an eStargz blob with stargz-snapshotter's estargz
// package (the producer the tests pull from; no cfs code involved).
//
//	estargz-gen [-chunk-size N] IN.tar OUT.blob
//
// Prints one JSON object: the blob's digest and size, its diff_id, the TOC digest (the
// containerd.io/snapshot/stargz/toc.digest annotation) and the uncompressed size (the
// io.containers.estargz.uncompressed-size annotation).
package main

import (
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/containerd/stargz-snapshotter/estargz"
)

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

func run() error {
	chunkSize := flag.Int("chunk-size", 0, "largest chunk of a file content in one gzip member (0: the library's default)")
	flag.Parse()
	if flag.NArg() != 2 {
		return fmt.Errorf("usage: estargz-gen [-chunk-size N] IN.tar OUT.blob")
	}
	in, err := os.Open(flag.Arg(0))
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	var opts []estargz.Option
	if *chunkSize > 0 {
		opts = append(opts, estargz.WithChunkSize(*chunkSize))
	}
	blob, err := estargz.Build(io.NewSectionReader(in, 0, st.Size()), opts...)
	if err != nil {
		return fmt.Errorf("%s: %w", flag.Arg(0), err)
	}
	defer blob.Close()
	out, err := os.Create(flag.Arg(1))
	if err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), blob)
	if err != nil {
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	// The uncompressed size: the blob decompressed whole, counted.
	f, err := os.Open(flag.Arg(1))
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f) // all members, the TOC's and the footer's included
	if err != nil {
		return err
	}
	var cw countWriter
	if _, err := io.Copy(&cw, zr); err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]interface{}{
		"digest":            fmt.Sprintf("sha256:%x", h.Sum(nil)),
		"size":              n,
		"diff_id":           blob.DiffID().String(),
		"toc_digest":        blob.TOCDigest().String(),
		"uncompressed_size": cw.n,
	})
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "estargz-gen:", err)
		os.Exit(1)
	}
}
