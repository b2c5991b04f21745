// gotar: writes a directory tree as a tar with Go's archive/tar, the writer Docker, moby and
// containers/storage use (FileInfoHeader, inode-tracked hard links, SCHILY.xattr.* records).
//
//	gotar -format pax|pax-ns|gnu|ustar -o OUT.tar DIR
//
// pax is what Docker writes: mtime truncated to seconds, no atime/ctime, xattrs as PAX
// records. pax-ns keeps nanoseconds and atime/ctime. gnu and ustar have no PAX records (no
// xattrs). An entry the format cannot hold is reported on stderr as "skip: PATH: REASON" and
// left out; the archive is still written.
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"
	"unsafe"
)

func lxattrs(path string) map[string]string {
	out := map[string]string{}
	p, err := syscall.BytePtrFromString(path)
	if err != nil {
		return out
	}
	buf := make([]byte, 65536)
	n, _, e := syscall.Syscall(syscall.SYS_LLISTXATTR, uintptr(unsafe.Pointer(p)),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
	if e != 0 || n == 0 {
		return out
	}
	for _, name := range bytes.Split(buf[:n-1], []byte{0}) {
		np, _ := syscall.BytePtrFromString(string(name))
		val := make([]byte, 65536)
		m, _, e := syscall.Syscall6(syscall.SYS_LGETXATTR, uintptr(unsafe.Pointer(p)),
			uintptr(unsafe.Pointer(np)), uintptr(unsafe.Pointer(&val[0])), uintptr(len(val)), 0, 0)
		if e == 0 {
			out[string(name)] = string(val[:m])
		}
	}
	return out
}

func main() {
	format := flag.String("format", "pax", "pax, pax-ns, gnu or ustar")
	outPath := flag.String("o", "", "output tar")
	flag.Parse()
	if flag.NArg() != 1 || *outPath == "" {
		fmt.Fprintln(os.Stderr, "usage: gotar -format F -o OUT DIR")
		os.Exit(2)
	}
	root := flag.Arg(0)
	f, err := os.Create(*outPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tw := tar.NewWriter(f)
	type ino struct{ dev, ino uint64 }
	seen := map[ino]string{}
	var paths []string
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			paths = append(paths, p)
		}
		return nil
	})
	sort.Strings(paths)
	failed := false
	for _, p := range paths {
		fi, err := os.Lstat(p)
		if err != nil {
			fmt.Fprintf(os.Stderr, "skip: %q: %v\n", p, err)
			continue
		}
		rel, _ := filepath.Rel(root, p)
		name := "./" + rel
		if rel == "." {
			name = "./"
		}
		link := ""
		if fi.Mode()&os.ModeSymlink != 0 {
			link, _ = os.Readlink(p)
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			fmt.Fprintf(os.Stderr, "skip: %q: %v\n", name, err)
			continue
		}
		hdr.Name = name
		if fi.IsDir() && name != "./" {
			hdr.Name += "/"
		}
		st := fi.Sys().(*syscall.Stat_t)
		var firstOf ino
		isFirst := false
		if fi.Mode().IsRegular() && st.Nlink > 1 {
			k := ino{uint64(st.Dev), uint64(st.Ino)}
			if first, ok := seen[k]; ok {
				hdr.Typeflag = tar.TypeLink
				hdr.Linkname = first
				hdr.Size = 0
			} else {
				firstOf = k
				isFirst = true
			}
		}
		switch *format {
		case "pax", "pax-ns":
			hdr.Format = tar.FormatPAX
		case "gnu":
			hdr.Format = tar.FormatGNU
		case "ustar":
			hdr.Format = tar.FormatUSTAR
		default:
			fmt.Fprintln(os.Stderr, "unknown format", *format)
			os.Exit(2)
		}
		// Only pax-ns keeps sub-second and access/change times (as PAX records).
		if *format != "pax-ns" {
			hdr.ModTime = hdr.ModTime.Truncate(time.Second)
			hdr.AccessTime = time.Time{}
			hdr.ChangeTime = time.Time{}
		}
		if hdr.Format == tar.FormatPAX {
			xs := lxattrs(p)
			if len(xs) > 0 {
				hdr.PAXRecords = map[string]string{}
				for k, v := range xs {
					hdr.PAXRecords["SCHILY.xattr."+k] = v
				}
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			fmt.Fprintf(os.Stderr, "skip: %q: %v\n", name, err)
			continue
		}
		if isFirst {
			seen[firstOf] = name
		}
		if hdr.Typeflag == tar.TypeReg {
			in, err := os.Open(p)
			if err == nil {
				_, err = io.Copy(tw, in)
				in.Close()
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "gotar: %q: %v\n", name, err)
				failed = true
				break
			}
		}
	}
	if err := tw.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "gotar:", err)
		failed = true
	}
	f.Close()
	if failed {
		os.Exit(1)
	}
}
