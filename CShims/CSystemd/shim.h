// The libsystemd calls Pipemesh services make: readiness, status and watchdog
// notifications (sd-daemon) and structured journal entries (sd-journal).
// sd_journal_sendv takes an array of "FIELD=value" iovecs; the variadic
// sd_journal_send is not callable from Swift.
#ifndef PIPEMESH_CSYSTEMD_SHIM_H
#define PIPEMESH_CSYSTEMD_SHIM_H

#include <sys/uio.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>

#endif
