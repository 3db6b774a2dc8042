/* Stand-in for the subset of NCCL that kernels/comm/comm_nccl.cu calls: names, signatures and
 * enum values as in nccl.h (2.28), implemented in nccl.cc for ranks that are host threads of one
 * process, each on its own emulated device.
 *
 * Model. Ranks meet through the unique id: ncclCommInitRankConfig joins the clique of that id,
 * which is complete once every rank has joined (a non-blocking communicator reports
 * ncclInProgress from ncclCommGetAsyncError until then; a blocking one waits). A collective is
 * the next entry of the clique's sequence: each rank posts it (buffers, count, type, operation,
 * root, stream), and the last rank to post performs it for every rank: the reduction runs over
 * the ranks in rank order (so the result is the same on every rank and from run to run), then
 * every rank's output is written and its stream released. Until then the collective is library
 * work in flight on the poster's stream (simt::stream_begin_work): events recorded after it are
 * not ready, so a rank that never posts leaves the others waiting, as on GPUs. On a non-blocking
 * communicator a collective (or a group of them) is queued in the background: the call returns
 * ncclInProgress and the next ncclCommGetAsyncError completes the queueing, as NCCL may.
 *
 * Checked, with a message on stderr saying which rank and what, as NCCL would refuse it or as
 * it would corrupt or hang: a config without NCCL_CONFIG_INITIALIZER, a rank out of range or
 * joining twice, two ranks of one clique on the same device (NCCL: "Duplicate GPU detected"),
 * buffers that are not device memory, ranks posting different collectives at the same position
 * of the sequence (the communicator then fails with ncclInvalidUsage on every rank), group
 * calls that do not pair. ncclCommAbort of one rank makes its peers' ncclCommGetAsyncError
 * report ncclRemoteError (the transport sees the connection close) and cancels its own work. */
#ifndef MS_SIMT_NCCL_H
#define MS_SIMT_NCCL_H

#include <limits.h>
#include <stddef.h>

#include "simt_runtime.h"

extern "C" {

#define NCCL_MAJOR 2
#define NCCL_MINOR 28
#define NCCL_PATCH 9
#define NCCL_VERSION(X, Y, Z)                                                                      \
    (((X) <= 2 && (Y) <= 8) ? (X) * 1000 + (Y) * 100 + (Z) : (X) * 10000 + (Y) * 100 + (Z))
#define NCCL_VERSION_CODE NCCL_VERSION(NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH)

typedef struct ncclComm *ncclComm_t;

#define NCCL_UNIQUE_ID_BYTES 128
typedef struct {
    char internal[NCCL_UNIQUE_ID_BYTES];
} ncclUniqueId;

typedef enum {
    ncclSuccess = 0,
    ncclUnhandledCudaError = 1,
    ncclSystemError = 2,
    ncclInternalError = 3,
    ncclInvalidArgument = 4,
    ncclInvalidUsage = 5,
    ncclRemoteError = 6,
    ncclInProgress = 7,
    ncclNumResults = 8
} ncclResult_t;

#define NCCL_CONFIG_UNDEF_INT INT_MIN
#define NCCL_CONFIG_UNDEF_PTR NULL

/* The layout of nccl.h's ncclConfig_v22800; the stand-in reads size, magic, version, blocking. */
typedef struct ncclConfig_v22800 {
    size_t size;
    unsigned int magic;
    unsigned int version;
    int blocking;
    int cgaClusterSize;
    int minCTAs;
    int maxCTAs;
    const char *netName;
    int splitShare;
    int trafficClass;
    const char *commName;
    int collnetEnable;
    int CTAPolicy;
    int shrinkShare;
    int nvlsCTAs;
    int nChannelsPerNetPeer;
    int nvlinkCentricSched;
} ncclConfig_t;

#define NCCL_CONFIG_INITIALIZER                                                                    \
    {sizeof(ncclConfig_t),                                                                         \
     0xcafebeef,                                                                                   \
     NCCL_VERSION(NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH),                                             \
     NCCL_CONFIG_UNDEF_INT,                                                                        \
     NCCL_CONFIG_UNDEF_INT,                                                                        \
     NCCL_CONFIG_UNDEF_INT,                                                                        \
     NCCL_CONFIG_UNDEF_INT,                                                                        \
     NCCL_CONFIG_UNDEF_PTR,                                                                        \
     NCCL_CONFIG_UNDEF_INT,                                                                        \
     NCCL_CONFIG_UNDEF_INT,                                                                        \
     NCCL_CONFIG_UNDEF_PTR,                                                                        \
     NCCL_CONFIG_UNDEF_INT,                                                                        \
     NCCL_CONFIG_UNDEF_INT,                                                                        \
     NCCL_CONFIG_UNDEF_INT,                                                                        \
     NCCL_CONFIG_UNDEF_INT,                                                                        \
     NCCL_CONFIG_UNDEF_INT,                                                                        \
     NCCL_CONFIG_UNDEF_INT}

typedef enum { ncclSum = 0, ncclProd = 1, ncclMax = 2, ncclMin = 3, ncclAvg = 4 } ncclRedOp_t;

/* 16- and 8-bit floating-point types are declared but refused (ncclInvalidArgument). */
typedef enum {
    ncclInt8 = 0,
    ncclChar = 0,
    ncclUint8 = 1,
    ncclInt32 = 2,
    ncclInt = 2,
    ncclUint32 = 3,
    ncclInt64 = 4,
    ncclUint64 = 5,
    ncclFloat16 = 6,
    ncclHalf = 6,
    ncclFloat32 = 7,
    ncclFloat = 7,
    ncclFloat64 = 8,
    ncclDouble = 8,
    ncclBfloat16 = 9,
    ncclNumTypes = 12
} ncclDataType_t;

ncclResult_t ncclGetUniqueId(ncclUniqueId *uniqueId);
ncclResult_t ncclCommInitRankConfig(ncclComm_t *comm, int nranks, ncclUniqueId commId, int rank,
                                    ncclConfig_t *config);
ncclResult_t ncclCommFinalize(ncclComm_t comm);
ncclResult_t ncclCommDestroy(ncclComm_t comm);
ncclResult_t ncclCommAbort(ncclComm_t comm);
const char *ncclGetErrorString(ncclResult_t result);
ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *asyncError);
ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count,
                           ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t stream);
ncclResult_t ncclBroadcast(const void *sendbuff, void *recvbuff, size_t count,
                           ncclDataType_t datatype, int root, ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclGroupStart(void);
ncclResult_t ncclGroupEnd(void);

/* ---- emulator controls (not NCCL API) -------------------------------------------------------- */
struct simt_nccl_stats {
    unsigned long collectives; /* collectives performed (once for all ranks of a clique) */
    unsigned long groups;      /* ncclGroupEnd calls that posted at least one collective */
    size_t largest;            /* the most elements one collective moved per rank */
};
void simt_nccl_get_stats(struct simt_nccl_stats *stats);
}

#endif
