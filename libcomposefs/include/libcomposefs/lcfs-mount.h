/* libcomposefs-compatible API of cfs: kernel mounts of composefs images.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef _LCFS_MOUNT_H
#define _LCFS_MOUNT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#ifndef LCFS_EXTERN
#define LCFS_EXTERN extern
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* errno values of the fs-verity checks: no digest on the image, a different one, no
 * signature. */
#define ENOVERITY ENOTTY
#define EWRONGVERITY EILSEQ
#define ENOSIGNATURE EBADMSG

enum lcfs_mount_flags_t {
	LCFS_MOUNT_FLAGS_NONE = 0,
	LCFS_MOUNT_FLAGS_REQUIRE_VERITY = (1 << 0),
	LCFS_MOUNT_FLAGS_READONLY = (1 << 1),
	LCFS_MOUNT_FLAGS_IDMAP = (1 << 3),
	LCFS_MOUNT_FLAGS_TRY_VERITY = (1 << 4),

	LCFS_MOUNT_FLAGS_MASK = (1 << 5) - 1,
};

struct lcfs_mount_options_s {
	const char **objdirs; /* object directories (at least one) */
	size_t n_objdirs;
	const char *workdir; /* both or neither of workdir/upperdir */
	const char *upperdir;
	const char *expected_fsverity_digest; /* hex; the image must carry it */
	uint32_t flags; /* enum lcfs_mount_flags_t */
	int idmap_fd; /* user namespace fd, with LCFS_MOUNT_FLAGS_IDMAP */
	const char *image_mountdir; /* accepted, unused by cfs */

	uint32_t reserved[4];
	void *reserved2[4];
};

/* Both return 0, or -1 with errno set. */
LCFS_EXTERN int lcfs_mount_image(const char *path, const char *mountpoint,
				 struct lcfs_mount_options_s *options);
LCFS_EXTERN int lcfs_mount_fd(int fd, const char *mountpoint,
			      struct lcfs_mount_options_s *options);

#ifdef __cplusplus
}
#endif

#endif
