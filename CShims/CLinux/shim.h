// Linux calls that glibc declares only under _GNU_SOURCE, which Swift's Glibc module does not
// define: anonymous memory files (memfd_create), their seals, path-only opens and holes, for the
// partitions' same-host fetches.
#ifndef PIPEMESH_CLINUX_SHIM_H
#define PIPEMESH_CLINUX_SHIM_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <unistd.h>

/// A new anonymous memory file named `name` (close-on-exec), or -1 with errno set.
static inline int pipemesh_memfd_create(const char *name) { return memfd_create(name, MFD_CLOEXEC); }

/// Whether `fd` is a file that takes seals: a memory file (memfd_create) or another shmem file.
static inline bool pipemesh_supports_seals(int fd) { return fcntl(fd, F_GET_SEALS) >= 0; }

/// Opens `path` as a location only (O_PATH): nothing of the file is opened for reading or
/// writing, no device is touched and no terminal is taken. -1 with errno set on failure.
static inline int pipemesh_open_location(const char *path) { return open(path, O_PATH | O_CLOEXEC); }

/// Opens `proc_path` (/proc/self/fd/N of a location opened before) for reading and writing,
/// without blocking or taking a controlling terminal. -1 with errno set on failure.
static inline int pipemesh_reopen_read_write(const char *proc_path) {
  return open(proc_path, O_RDWR | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
}

/// The first hole of `fd` at or after `offset` (the file's end when it has none there), or -1.
static inline off_t pipemesh_first_hole(int fd, off_t offset) { return lseek(fd, offset, SEEK_HOLE); }

#endif
