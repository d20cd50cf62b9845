// C boundary to OpenBLAS: CBLAS (sgemm, thread control) and the two LAPACK drivers MeshTensor uses.
// Ownership: every pointer is borrowed for the duration of the call. Threading: the routines are
// re-entrant; openblas_set_num_threads changes a process-wide setting.
#ifndef PIPEMESH_COPENBLAS_SHIM_H
#define PIPEMESH_COPENBLAS_SHIM_H

#include <stddef.h>
#include <cblas.h>

// LAPACK (Fortran ABI, column-major). The trailing size_t arguments are the hidden lengths of the
// character arguments that gfortran-built LAPACK expects; passing them keeps the call well defined.

/// Solves A X = B for symmetric positive-definite A (Cholesky). A and B are overwritten.
void sposv_(const char *uplo, const int *n, const int *nrhs, float *a, const int *lda,
            float *b, const int *ldb, int *info, size_t uplo_len);

/// Least squares min ||A X - B|| for full-rank A via QR/LQ. A and B are overwritten.
void sgels_(const char *trans, const int *m, const int *n, const int *nrhs, float *a,
            const int *lda, float *b, const int *ldb, float *work, const int *lwork, int *info,
            size_t trans_len);

#endif
