// Linux calls that glibc declares only under _GNU_SOURCE, which Swift's Glibc module does not
// define: anonymous memory files (memfd_create) and their seals, for the partitions' same-host
// fetches.
#ifndef PIPEMESH_CLINUX_SHIM_H
#define PIPEMESH_CLINUX_SHIM_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <stdbool.h>
#include <sys/mman.h>

/// A new anonymous memory file named `name` (close-on-exec), or -1 with errno set.
static inline int pipemesh_memfd_create(const char *name) { return memfd_create(name, MFD_CLOEXEC); }

/// Whether `fd` is a file that takes seals: a memory file (memfd_create) or another shmem file.
static inline bool pipemesh_supports_seals(int fd) { return fcntl(fd, F_GET_SEALS) >= 0; }

#endif
