// The C-compatible dumper: composefs-info 1.0.8's `dump` and `ls` output, byte for byte.
#pragma once

#include <span>
#include <string>

#include "cfs/erofs/reader.h"
#include "cfs/erofs/tree.h"
#include "cfs/output.h"

namespace cfs::erofs {

// `composefs-info dump`: the image as a composefs-dump(5) file, read straight from the image
// as the C reader sees it (xattrs in stored order, opaque markers kept, '@' lines with the
// target's fields), so that `mkcomposefs --from-file` rebuilds the same image. top_filter
// keeps only the named root entries (empty: all). The image is validated first; throws
// cfs::Error for an invalid image or when the output would exceed image.decode_budget().
void write_compat_dump(const Image& image, OutputSink& out,
                       std::span<const std::string> top_filter = {});

// `cfsctl dump`: the same text as write_dumpfile(image.to_tree()) (see dumpfile.h), printed
// while walking the image instead of from a tree. The image is validated strictly first
// (Image::validate); throws cfs::Error as to_tree() would.
void write_image_dumpfile(const Image& image, OutputSink& out);

// `composefs-info ls`: every path but the root; directories end in "/\t", symlinks show
// "\t-> TARGET" and external files "\t@ OBJECT" (later hardlinks are bare names).
void write_compat_listing(const Tree& tree, OutputSink& out);

}  // namespace cfs::erofs
