// C boundary to zlib's inflate, for the deflate entries of .npz archives and gzip files.
// Ownership: the caller owns the z_stream and every buffer it points to; end each stream that
// initialised successfully with inflateEnd. Threading: one stream per thread; streams are independent.
#ifndef PIPEMESH_CZLIB_SHIM_H
#define PIPEMESH_CZLIB_SHIM_H

#include <zlib.h>

/// Starts a stream that inflates raw deflate data (no zlib or gzip wrapper), as zip entries store it.
static inline int czlib_inflate_init_raw(z_stream *stream) {
    return inflateInit2(stream, -MAX_WBITS);
}

/// Starts a stream that inflates one gzip member (header and CRC-32 trailer checked by zlib).
static inline int czlib_inflate_init_gzip(z_stream *stream) {
    return inflateInit2(stream, MAX_WBITS + 16);
}

#endif
