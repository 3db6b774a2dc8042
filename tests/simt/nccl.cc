/* NCCL stand-in (model and checks in simt_nccl.h): the ranks of a clique are host threads of
 * this process, so a collective is carried out by plain copies between their emulated device
 * buffers. One mutex guards every clique and communicator; the waits of blocking calls use its
 * condition variable. A collective's output becomes visible to its rank through the stream
 * ticket (simt::stream_end_work), which the rank's events and synchronisation wait for. */
/* The standard headers first: simt.h's CUDA keyword macros (__noinline__) would break them. */
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "simt.h"
#include "simt_nccl.h"

namespace {

enum coll_kind { ALL_REDUCE, BROADCAST };

/* One rank's part of a collective. */
struct post {
    ncclComm *comm;
    coll_kind kind;
    const void *send;
    void *recv;
    size_t count;
    ncclDataType_t type;
    ncclRedOp_t op; /* ALL_REDUCE */
    int root;       /* BROADCAST */
    cudaStream_t stream;
    uint64_t ticket; /* on `stream`, from the moment the post is queued */
};

struct clique;

} // namespace

struct ncclComm {
    clique *c;
    int rank, nranks, device;
    bool blocking;
    bool finalizing;
    ncclResult_t error;       /* sticky failure of this rank alone */
    uint64_t next_seq;        /* this rank's next position in the clique's sequence */
    int in_flight;            /* its posts queued and not yet performed */
    std::vector<post> queued; /* non-blocking: posted, to be queued by the next poll */
};

namespace {

struct clique {
    std::string key; /* the unique id's bytes */
    int nranks;
    std::vector<ncclComm *> members; /* [nranks]; nullptr before joining and after leaving */
    int joined = 0, left = 0;
    ncclResult_t error = ncclSuccess; /* sticky failure of the whole clique */
    bool peer_aborted = false;
    std::map<uint64_t, std::vector<post *>> pending; /* sequence -> [nranks] posts (or null) */
};

std::mutex g_mu;
std::condition_variable g_cv;
std::map<std::string, clique *> g_cliques;
simt_nccl_stats g_stats;
std::atomic<unsigned long> g_ids{0};

/* Group calls of this host thread: depth and the collectives posted inside. */
thread_local int g_group_depth;
thread_local std::vector<post> g_group;

__attribute__((format(printf, 1, 2))) void say(const char *fmt, ...) {
    std::fputs("simt NCCL: ", stderr);
    va_list ap;
    va_start(ap, fmt);
    std::vfprintf(stderr, fmt, ap);
    va_end(ap);
    std::fputc('\n', stderr);
}

size_t type_bytes(ncclDataType_t t) {
    switch (t) {
    case ncclInt8:
    case ncclUint8:
        return 1;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32:
        return 4;
    case ncclInt64:
    case ncclUint64:
    case ncclFloat64:
        return 8;
    default:
        return 0; /* 16- and 8-bit floats: not modelled */
    }
}

const char *type_name(ncclDataType_t t) {
    switch (t) {
    case ncclInt8:
        return "int8";
    case ncclUint8:
        return "uint8";
    case ncclInt32:
        return "int32";
    case ncclUint32:
        return "uint32";
    case ncclInt64:
        return "int64";
    case ncclUint64:
        return "uint64";
    case ncclFloat32:
        return "float32";
    case ncclFloat64:
        return "float64";
    default:
        return "an unsupported type";
    }
}

const char *op_name(ncclRedOp_t op) {
    switch (op) {
    case ncclSum:
        return "sum";
    case ncclProd:
        return "prod";
    case ncclMax:
        return "max";
    case ncclMin:
        return "min";
    default:
        return "an unsupported operation";
    }
}

std::string describe(const post &p) {
    char s[160];
    if (p.kind == ALL_REDUCE)
        std::snprintf(s, sizeof s, "ncclAllReduce of %zu x %s (%s)", p.count, type_name(p.type),
                      op_name(p.op));
    else
        std::snprintf(s, sizeof s, "ncclBroadcast of %zu x %s (root %d)", p.count,
                      type_name(p.type), p.root);
    return s;
}

bool same_collective(const post &a, const post &b) {
    return a.kind == b.kind && a.count == b.count && a.type == b.type &&
           (a.kind == ALL_REDUCE ? a.op == b.op : a.root == b.root);
}

/* ---- the data movement --------------------------------------------------------------------- */

template <typename T>
T combine(T a, T b, ncclRedOp_t op) {
    switch (op) {
    case ncclProd:
        return a * b;
    case ncclMax:
        return a > b ? a : b;
    case ncclMin:
        return a < b ? a : b;
    default:
        return a + b;
    }
}

/* acc = the reduction of every rank's send buffer, in rank order; then every recv = acc. */
template <typename T>
void all_reduce(const std::vector<post *> &posts) {
    size_t n = posts[0]->count;
    std::vector<T> acc(static_cast<const T *>(posts[0]->send),
                       static_cast<const T *>(posts[0]->send) + n);
    for (size_t r = 1; r < posts.size(); r++) {
        const T *x = static_cast<const T *>(posts[r]->send);
        for (size_t i = 0; i < n; i++) acc[i] = combine(acc[i], x[i], posts[0]->op);
    }
    for (post *p : posts) std::memcpy(p->recv, acc.data(), n * sizeof(T));
}

void perform(const std::vector<post *> &posts) {
    const post &p0 = *posts[0];
    if (p0.kind == BROADCAST) {
        size_t bytes = p0.count * type_bytes(p0.type);
        std::vector<char> data(static_cast<const char *>(posts[(size_t)p0.root]->send),
                               static_cast<const char *>(posts[(size_t)p0.root]->send) + bytes);
        for (post *p : posts) std::memcpy(p->recv, data.data(), bytes);
    } else {
        switch (p0.type) {
        case ncclInt8:
            all_reduce<int8_t>(posts);
            break;
        case ncclUint8:
            all_reduce<uint8_t>(posts);
            break;
        case ncclInt32:
            all_reduce<int32_t>(posts);
            break;
        case ncclUint32:
            all_reduce<uint32_t>(posts);
            break;
        case ncclInt64:
            all_reduce<int64_t>(posts);
            break;
        case ncclUint64:
            all_reduce<uint64_t>(posts);
            break;
        case ncclFloat32:
            all_reduce<float>(posts);
            break;
        default:
            all_reduce<double>(posts);
            break;
        }
    }
    g_stats.collectives++;
    if (p0.count > g_stats.largest) g_stats.largest = p0.count;
}

/* ---- the clique's sequence (g_mu held) ----------------------------------------------------- */

/* Ends a post, performed or cancelled (its rank or the clique failed): releases its stream and
 * frees it. */
void retire(post *p) {
    simt::stream_end_work(p->stream, p->ticket);
    p->comm->in_flight--;
    delete p;
}

/* Cancels every queued post of the clique: nothing of it can complete any more. */
void fail_clique(clique *c, ncclResult_t why) {
    if (c->error == ncclSuccess) c->error = why;
    for (auto &entry : c->pending)
        for (post *p : entry.second)
            if (p) retire(p);
    c->pending.clear();
}

/* What ncclCommGetAsyncError reports for comm now. */
ncclResult_t state_of(const ncclComm *comm) {
    const clique *c = comm->c;
    if (comm->error != ncclSuccess) return comm->error;
    if (c->error != ncclSuccess) return c->error;
    if (c->peer_aborted) return ncclRemoteError;
    if (c->joined < c->nranks) return ncclInProgress;
    if (comm->finalizing && comm->in_flight > 0) return ncclInProgress;
    return ncclSuccess;
}

/* Queues p at its rank's next position of the sequence; the last rank to arrive performs it. */
ncclResult_t enqueue(post p) {
    ncclComm *comm = p.comm;
    clique *c = comm->c;
    ncclResult_t state = state_of(comm);
    if (state != ncclSuccess && state != ncclInProgress) return state;
    if (simt::stream_begin_work(p.stream, &p.ticket) != cudaSuccess) {
        say("rank %d of %d: %s on a stream that does not exist", comm->rank, comm->nranks,
            describe(p).c_str());
        return comm->error = ncclUnhandledCudaError;
    }
    uint64_t seq = comm->next_seq++;
    comm->in_flight++;
    post *stored = new post(p); /* `pending` holds it until it is performed or cancelled */
    std::vector<post *> &entry = c->pending[seq];
    if (entry.empty()) entry.assign((size_t)c->nranks, nullptr);
    entry[(size_t)comm->rank] = stored;
    for (int r = 0; r < c->nranks; r++) {
        post *q = entry[(size_t)r];
        if (q && !same_collective(*q, *stored)) {
            say("collective #%llu of the communicator: rank %d posts %s, rank %d posted %s "
                "(ranks must issue the same collectives in the same order)",
                (unsigned long long)seq, comm->rank, describe(*stored).c_str(), r,
                describe(*q).c_str());
            fail_clique(c, ncclInvalidUsage); /* cancels this entry too */
            return ncclInvalidUsage;
        }
    }
    for (post *q : entry)
        if (!q) return ncclSuccess; /* a rank has yet to post it */
    perform(entry);
    for (post *q : entry) retire(q);
    c->pending.erase(seq);
    g_cv.notify_all(); /* a blocking ncclCommFinalize may wait for it */
    return ncclSuccess;
}

/* Queues the collectives a non-blocking communicator has accepted (the background queueing),
 * once the communicator is up; a failure shows in state_of. */
void flush_queued(ncclComm *comm) {
    if (comm->queued.empty() || state_of(comm) != ncclSuccess) return;
    std::vector<post> todo;
    todo.swap(comm->queued);
    for (post &p : todo)
        if (enqueue(p) != ncclSuccess) return;
}

/* Takes comm out of its clique and frees it; `aborted` tells the peers. */
void leave(ncclComm *comm, bool aborted) {
    clique *c = comm->c;
    for (auto it = c->pending.begin(); it != c->pending.end();) {
        post *&p = it->second[(size_t)comm->rank];
        if (p) {
            retire(p);
            p = nullptr;
        }
        bool empty = true;
        for (post *q : it->second) empty &= q == nullptr;
        it = empty ? c->pending.erase(it) : std::next(it);
    }
    c->members[(size_t)comm->rank] = nullptr;
    c->left++;
    if (aborted) c->peer_aborted = true;
    delete comm;
    if (c->left == c->joined) { /* every member has left: the posts left their entries too */
        g_cliques.erase(c->key);
        delete c;
    }
    g_cv.notify_all();
}

/* Checks a collective's arguments; ncclSuccess or why not (with a message). */
ncclResult_t check_args(const post &p, const char *fn) {
    if (!p.comm) {
        say("%s: comm is NULL", fn);
        return ncclInvalidArgument;
    }
    size_t elem = type_bytes(p.type);
    if (!elem) {
        say("rank %d: %s: data type %d is not modelled by the stand-in", p.comm->rank, fn,
            (int)p.type);
        return ncclInvalidArgument;
    }
    if (p.kind == ALL_REDUCE && p.op != ncclSum && p.op != ncclProd && p.op != ncclMax &&
        p.op != ncclMin) {
        say("rank %d: %s: reduction %d is not modelled by the stand-in", p.comm->rank, fn,
            (int)p.op);
        return ncclInvalidArgument;
    }
    if (p.kind == BROADCAST && (p.root < 0 || p.root >= p.comm->nranks)) {
        say("rank %d: %s: root %d is not a rank of %d", p.comm->rank, fn, p.root, p.comm->nranks);
        return ncclInvalidArgument;
    }
    size_t bytes = p.count * elem;
    if (bytes == 0) return ncclSuccess;
    bool needs_send = p.kind == ALL_REDUCE || p.comm->rank == p.root;
    if ((needs_send && !simt::is_device_range(p.send, bytes)) ||
        !simt::is_device_range(p.recv, bytes)) {
        say("rank %d: %s of %zu bytes: sendbuff %p / recvbuff %p is not inside one device "
            "allocation",
            p.comm->rank, fn, bytes, p.send, (void *)p.recv);
        return ncclInvalidArgument;
    }
    return ncclSuccess;
}

/* Posts a collective now (blocking communicator), at the next poll (non-blocking), or at the
 * end of the group. */
ncclResult_t submit(const post &p, const char *fn) {
    ncclResult_t r = check_args(p, fn);
    if (r != ncclSuccess || p.count == 0) return r;
    if (g_group_depth > 0) {
        g_group.push_back(p);
        return ncclSuccess;
    }
    std::lock_guard<std::mutex> hold(g_mu);
    if (p.comm->blocking) return enqueue(p);
    p.comm->queued.push_back(p);
    return ncclInProgress;
}

} // namespace

extern "C" {

ncclResult_t ncclGetUniqueId(ncclUniqueId *uniqueId) {
    if (!uniqueId) return ncclInvalidArgument;
    std::memset(uniqueId, 0, sizeof *uniqueId);
    long long t = std::chrono::steady_clock::now().time_since_epoch().count();
    std::snprintf(uniqueId->internal, sizeof uniqueId->internal, "simt-nccl %ld %lu %lld",
                  (long)getpid(), g_ids.fetch_add(1) + 1, t);
    return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t *comm, int nranks, ncclUniqueId commId, int rank,
                                    ncclConfig_t *config) {
    if (!comm) return ncclInvalidArgument;
    *comm = nullptr;
    if (nranks < 1 || rank < 0 || rank >= nranks) {
        say("ncclCommInitRankConfig: rank %d of %d is out of range", rank, nranks);
        return ncclInvalidArgument;
    }
    if (config && (config->size != sizeof *config || config->magic != 0xcafebeef)) {
        say("rank %d: ncclCommInitRankConfig: the config was not set up with "
            "NCCL_CONFIG_INITIALIZER",
            rank);
        return ncclInvalidArgument;
    }
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess) return ncclUnhandledCudaError;
    bool blocking = !config || config->blocking != 0; /* NCCL_CONFIG_UNDEF_INT: blocking */

    std::unique_lock<std::mutex> hold(g_mu);
    std::string key(commId.internal, sizeof commId.internal);
    clique *&c = g_cliques[key];
    if (!c) {
        c = new clique;
        c->key = key;
        c->nranks = nranks;
        c->members.assign((size_t)nranks, nullptr);
    }
    if (c->nranks != nranks) {
        say("rank %d: ncclCommInitRankConfig: %d ranks, but the communicator of this unique id "
            "has %d",
            rank, nranks, c->nranks);
        return ncclInvalidUsage;
    }
    if (c->members[(size_t)rank] || c->joined == c->nranks) {
        say("rank %d of %d: ncclCommInitRankConfig: this rank already joined the communicator of "
            "this unique id",
            rank, nranks);
        return ncclInvalidUsage;
    }
    ncclComm *mine =
        new ncclComm{c, rank, nranks, device, blocking, false, ncclSuccess, 0, 0, {}};
    c->members[(size_t)rank] = mine;
    if (++c->joined == nranks) {
        for (int a = 0; a < nranks; a++)
            for (int b = a + 1; b < nranks; b++)
                if (c->members[(size_t)a] && c->members[(size_t)b] && c->error == ncclSuccess &&
                    c->members[(size_t)a]->device == c->members[(size_t)b]->device) {
                    say("Duplicate GPU detected: rank %d and rank %d both on CUDA device %d", a, b,
                        c->members[(size_t)a]->device);
                    c->error = ncclInvalidUsage;
                }
        g_cv.notify_all();
    }
    *comm = mine;
    if (!blocking) return ncclInProgress;
    g_cv.wait(hold, [&] { return state_of(mine) != ncclInProgress; });
    return state_of(mine);
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *asyncError) {
    if (!comm || !asyncError) return ncclInvalidArgument;
    std::lock_guard<std::mutex> hold(g_mu);
    flush_queued(comm);
    *asyncError = state_of(comm);
    return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count,
                           ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t stream) {
    return submit(post{comm, ALL_REDUCE, sendbuff, recvbuff, count, datatype, op, 0, stream, 0},
                  "ncclAllReduce");
}

ncclResult_t ncclBroadcast(const void *sendbuff, void *recvbuff, size_t count,
                           ncclDataType_t datatype, int root, ncclComm_t comm,
                           cudaStream_t stream) {
    return submit(post{comm, BROADCAST, sendbuff, recvbuff, count, datatype, ncclSum, root, stream,
                       0},
                  "ncclBroadcast");
}

ncclResult_t ncclGroupStart(void) {
    g_group_depth++;
    return ncclSuccess;
}

ncclResult_t ncclGroupEnd(void) {
    if (g_group_depth == 0) {
        say("ncclGroupEnd without ncclGroupStart");
        return ncclInvalidUsage;
    }
    if (--g_group_depth > 0) return ncclSuccess;
    std::vector<post> posts;
    posts.swap(g_group);
    if (posts.empty()) return ncclSuccess;
    std::lock_guard<std::mutex> hold(g_mu);
    g_stats.groups++;
    ncclResult_t result = ncclSuccess;
    for (const post &p : posts) {
        if (p.comm->blocking) {
            ncclResult_t r = enqueue(p);
            if (r != ncclSuccess) return r;
        } else {
            p.comm->queued.push_back(p);
            result = ncclInProgress;
        }
    }
    return result;
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) {
    if (!comm) return ncclInvalidArgument;
    std::unique_lock<std::mutex> hold(g_mu);
    flush_queued(comm); /* finalizing flushes what was issued */
    comm->finalizing = true;
    /* Non-blocking: done once ncclCommGetAsyncError stops saying ncclInProgress. */
    if (!comm->blocking) return state_of(comm);
    g_cv.wait(hold, [&] { return state_of(comm) != ncclInProgress; });
    return state_of(comm);
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
    if (!comm) return ncclInvalidArgument;
    std::lock_guard<std::mutex> hold(g_mu);
    leave(comm, comm->in_flight > 0 || !comm->queued.empty());
    return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
    if (!comm) return ncclSuccess;
    std::lock_guard<std::mutex> hold(g_mu);
    comm->queued.clear();
    leave(comm, true);
    return ncclSuccess;
}

const char *ncclGetErrorString(ncclResult_t result) {
    switch (result) {
    case ncclSuccess:
        return "no error";
    case ncclUnhandledCudaError:
        return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case ncclSystemError:
        return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case ncclInternalError:
        return "internal error - please report this issue to the NCCL developers";
    case ncclInvalidArgument:
        return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case ncclInvalidUsage:
        return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case ncclRemoteError:
        return "remote process exited or there was a network error";
    case ncclInProgress:
        return "NCCL operation in progress";
    default:
        return "unknown result code";
    }
}

void simt_nccl_get_stats(struct simt_nccl_stats *stats) {
    std::lock_guard<std::mutex> hold(g_mu);
    *stats = g_stats;
}
}
