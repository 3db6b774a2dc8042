/* The SIMT emulator: runs a CUDA kernel's grid on one CPU thread with GPU thread semantics.
 *
 * Blocks run one after another (one OS thread, so `static` shared memory is shared by exactly
 * the threads of the running block; launches from several host threads take turns). Within a
 * block every CUDA thread is a fiber (ucontext) with its own 256 KiB stack and a guard page. A
 * fiber runs until it reaches a synchronisation point, then yields to the scheduler:
 *   - __syncthreads(): the fiber parks at the barrier; when no fiber can run any more and every
 *     thread that has not exited waits at the barrier, all are released together. If some
 *     threads exited instead (a barrier inside a branch only part of the block takes), or the
 *     threads wait at different __syncthreads() calls, the launch is reported and aborted: on a
 *     GPU that hangs or silently corrupts shared memory.
 *   - warp intrinsics (__shfl*_sync, __ballot/__any/__all/__match_any_sync, __syncwarp): a warp
 *     is 32 consecutive threads (linear thread index / 32). An intrinsic is a rendezvous of the
 *     lanes named in its mask; the last lane to arrive computes every lane's result (from the
 *     values all lanes posted) and releases them. Reported: a mask without the calling lane, lanes
 *     of one collective passing different masks or calling different intrinsics, a mask naming a
 *     lane that exited, is missing from a partial last warp, or waits at a barrier (deadlock),
 *     and a shuffle reading a lane outside the mask (undefined on the GPU).
 * Threads of a block run in increasing order in even blocks and decreasing order in odd blocks,
 * so a kernel that reads shared memory another thread writes without a barrier in between sees
 * different values in different blocks and fails its test instead of passing by luck.
 *
 * Memory errors are AddressSanitizer's job: the emulated kernels and everything here are built
 * with -fsanitize=address, and the fiber switches are announced to ASan
 * (__sanitizer_start/finish_switch_fiber) so it knows which stack is live. Device memory
 * (runtime.cc) and shared memory (MS_SHARED / MS_DYNAMIC_SMEM, allocated here per block) are
 * heap blocks of their exact size, so an out-of-bounds access is an ASan report.
 *
 * Launch-configuration errors (a zero or too large grid or block, too much dynamic shared
 * memory) are not run: they set the sticky error that cudaGetLastError returns, as on the GPU,
 * and the backend's launch check reports them with the kernel's name. */
#include "simt.h"

#include <dlfcn.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define SIMT_ASAN 1
#endif

namespace simt {

uint3 g_thread_idx, g_block_idx;
dim3 g_block_dim, g_grid_dim;

namespace {

enum fiber_state { RUNNABLE, AT_BARRIER, AT_WARP, EXITED };

struct fiber {
    ucontext_t ctx;
    char *stack; /* lowest usable byte, above the guard page */
    uint3 idx;
    int tid, lane, warp;
    fiber_state state;
    site wait; /* the barrier or warp intrinsic it waits at */
    /* the posted warp collective */
    warp_op op;
    unsigned mask;
    uint64_t value, result;
    int arg, width;
    void *fake_stack; /* ASan's per-fiber fake stack handle */
};

/* One MS_SHARED declaration's storage in the running block. */
struct shared_var {
    const void *key;
    void *mem;
    size_t bytes;
};

constexpr size_t STACK_BYTES = 256 * 1024;
constexpr int MAX_THREADS = 1024;
constexpr size_t SMEM_LIMIT = 48 * 1024; /* static, and dynamic without the opt-in attribute */

struct emulator {
    bool active = false;
    const char *kernel = nullptr;
    site launched_at{nullptr, 0};
    const std::function<void()> *body = nullptr;
    int nthreads = 0;
    std::vector<fiber> fibers;
    std::vector<char *> stacks; /* pool, grows to the largest block launched */
    fiber *cur = nullptr;
    ucontext_t sched;
    const void *sched_stack = nullptr;
    size_t sched_stack_size = 0;
    void *sched_fake_stack = nullptr;
    size_t dyn_bytes = 0;
    void *dyn = nullptr;
    std::vector<shared_var> shared;
    size_t shared_bytes = 0;
};

emulator E;

const char *op_name(warp_op op) {
    switch (op) {
    case OP_SHFL_IDX:
        return "__shfl_sync";
    case OP_SHFL_UP:
        return "__shfl_up_sync";
    case OP_SHFL_DOWN:
        return "__shfl_down_sync";
    case OP_SHFL_XOR:
        return "__shfl_xor_sync";
    case OP_BALLOT:
        return "__ballot_sync";
    case OP_ANY:
        return "__any_sync";
    case OP_ALL:
        return "__all_sync";
    case OP_MATCH_ANY:
        return "__match_any_sync";
    case OP_SYNCWARP:
        return "__syncwarp";
    }
    return "warp intrinsic";
}

bool same_site(site a, site b) { return a.line == b.line && std::strcmp(a.file, b.file) == 0; }

/* Reports a misuse of the running kernel and aborts: a test that hits it dies with SIGABRT and
 * this message on stderr. */
[[noreturn]] __attribute__((format(printf, 2, 3))) void fail(const fiber *f, const char *fmt, ...) {
    std::fprintf(stderr, "simt: error in kernel %s (launched at %s:%d), block (%u,%u,%u)", E.kernel,
                 E.launched_at.file, E.launched_at.line, g_block_idx.x, g_block_idx.y,
                 g_block_idx.z);
    if (f) std::fprintf(stderr, ", thread (%u,%u,%u)", f->idx.x, f->idx.y, f->idx.z);
    std::fputs(": ", stderr);
    va_list ap;
    va_start(ap, fmt);
    std::vfprintf(stderr, fmt, ap);
    va_end(ap);
    std::fputc('\n', stderr);
    std::fflush(stderr);
    std::abort();
}

fiber *in_kernel(const char *what, site where) {
    if (!E.active || !E.cur) {
        std::fprintf(stderr, "simt: %s at %s:%d called outside a kernel\n", what, where.file,
                     where.line);
        std::abort();
    }
    return E.cur;
}

/* ---- fibers ---------------------------------------------------------------------------------- */

void start_switch(void **fake_stack_save, const void *bottom, size_t size) {
#ifdef SIMT_ASAN
    __sanitizer_start_switch_fiber(fake_stack_save, bottom, size);
#else
    (void)fake_stack_save, (void)bottom, (void)size;
#endif
}

void finish_switch(void *fake_stack_save, const void **bottom_old, size_t *size_old) {
#ifdef SIMT_ASAN
    __sanitizer_finish_switch_fiber(fake_stack_save, bottom_old, size_old);
#else
    (void)fake_stack_save, (void)bottom_old, (void)size_old;
#endif
}

/* glibc's swapcontext. ASan's interceptor of it prints a warning on first use ("doesn't fully
 * support makecontext/swapcontext") and wipes the shadow of the target stack; we announce every
 * switch ourselves (start/finish_switch_fiber) and unpoison fresh fiber stacks, and a resumed
 * fiber's stack must keep its redzones, so the emulator calls glibc directly. */
int switch_context(ucontext_t *from, const ucontext_t *to) {
#ifdef SIMT_ASAN
    using swap_fn = int (*)(ucontext_t *, const ucontext_t *);
    static swap_fn libc_swap = nullptr;
    if (!libc_swap) {
        void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
        if (libc) libc_swap = reinterpret_cast<swap_fn>(dlsym(libc, "swapcontext"));
        if (!libc_swap) libc_swap = swapcontext;
    }
    return libc_swap(from, to);
#else
    return swapcontext(from, to);
#endif
}

char *new_stack() {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    void *p = mmap(nullptr, STACK_BYTES + page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        std::perror("simt: mmap of a fiber stack");
        std::abort();
    }
    /* Guard page below the stack: an overflow faults instead of writing into a neighbour. */
    if (mprotect(p, page, PROT_NONE) != 0) {
        std::perror("simt: mprotect of a fiber stack guard");
        std::abort();
    }
    return static_cast<char *>(p) + page;
}

void fiber_main() {
    finish_switch(nullptr, &E.sched_stack, &E.sched_stack_size);
    (*E.body)();
    E.cur->state = EXITED;
    /* nullptr: this fiber never resumes, so ASan may drop its fake stack. */
    start_switch(nullptr, E.sched_stack, E.sched_stack_size);
    setcontext(&E.sched);
}

/* Scheduler side: runs f until it parks or exits. */
void resume(fiber *f) {
    E.cur = f;
    g_thread_idx = f->idx;
    start_switch(&E.sched_fake_stack, f->stack, STACK_BYTES);
    switch_context(&E.sched, &f->ctx);
    finish_switch(E.sched_fake_stack, nullptr, nullptr);
    E.cur = nullptr;
}

/* Fiber side: back to the scheduler until released. */
void park() {
    fiber *f = E.cur;
    start_switch(&f->fake_stack, E.sched_stack, E.sched_stack_size);
    switch_context(&f->ctx, &E.sched);
    finish_switch(f->fake_stack, &E.sched_stack, &E.sched_stack_size);
}

/* ---- barrier --------------------------------------------------------------------------------- */

/* A lane named in f's warp collective cannot arrive: name it and stop. */
[[noreturn]] void fail_warp_stall(fiber *f, const fiber *g) {
    if (g->state == AT_WARP)
        fail(f,
             "%s at %s:%d (mask 0x%08x) waits for lane %d, which waits in %s at %s:%d (mask "
             "0x%08x); neither can complete (mismatched masks or a divergent warp)",
             op_name(f->op), f->wait.file, f->wait.line, f->mask, g->lane, op_name(g->op),
             g->wait.file, g->wait.line, g->mask);
    if (g->state == EXITED)
        fail(f, "%s at %s:%d (mask 0x%08x) waits for lane %d, which exited without joining it",
             op_name(f->op), f->wait.file, f->wait.line, f->mask, g->lane);
    fail(f,
         "%s at %s:%d (mask 0x%08x) waits for lane %d, which waits at __syncthreads() at "
         "%s:%d: deadlock",
         op_name(f->op), f->wait.file, f->wait.line, f->mask, g->lane, g->wait.file, g->wait.line);
}

/* No fiber can run: release the barrier if the whole block is at one __syncthreads(), else
 * report why the block is stuck. */
void resolve_stall() {
    fiber *first_bar = nullptr, *first_exit = nullptr;
    int at_barrier = 0, exited = 0;
    for (int t = 0; t < E.nthreads; t++) {
        fiber *f = &E.fibers[t];
        if (f->state == AT_WARP) {
            for (int l = 0; l < 32; l++) {
                if (!(f->mask >> l & 1)) continue;
                fiber *g = &E.fibers[f->warp * 32 + l];
                if (g->state == EXITED || g->state == AT_BARRIER) fail_warp_stall(f, g);
            }
            for (int l = 0; l < 32; l++) {
                fiber *g = &E.fibers[f->warp * 32 + l];
                if ((f->mask >> l & 1) && g != f && g->state == AT_WARP && g->mask != f->mask)
                    fail_warp_stall(f, g);
            }
            fail(f, "%s at %s:%d never completes", op_name(f->op), f->wait.file, f->wait.line);
        }
        if (f->state == AT_BARRIER) {
            at_barrier++;
            if (!first_bar) first_bar = f;
        } else if (f->state == EXITED) {
            exited++;
            if (!first_exit) first_exit = f;
        }
    }
    if (exited)
        fail(first_bar,
             "__syncthreads() at %s:%d is reached by %d of the block's %d threads; %d exited "
             "without reaching it (the first: thread (%u,%u,%u)). A barrier must be reached by "
             "every thread of the block",
             first_bar->wait.file, first_bar->wait.line, at_barrier, E.nthreads, exited,
             first_exit->idx.x, first_exit->idx.y, first_exit->idx.z);
    for (int t = 0; t < E.nthreads; t++) {
        fiber *f = &E.fibers[t];
        if (!same_site(f->wait, first_bar->wait))
            fail(f, "threads of one block wait at different __syncthreads() calls: %s:%d and %s:%d",
                 first_bar->wait.file, first_bar->wait.line, f->wait.file, f->wait.line);
    }
    for (int t = 0; t < E.nthreads; t++) E.fibers[t].state = RUNNABLE;
}

/* ---- warp collectives ------------------------------------------------------------------------ */

bool is_shuffle(warp_op op) {
    return op == OP_SHFL_IDX || op == OP_SHFL_UP || op == OP_SHFL_DOWN || op == OP_SHFL_XOR;
}

/* Source lane of lane l's shuffle within its width-sized segment; l itself when the intrinsic
 * returns the caller's own value. */
int shuffle_source(const fiber *g) {
    int l = g->lane, w = g->width, seg = l & ~(w - 1);
    unsigned a = (unsigned)g->arg;
    switch (g->op) {
    case OP_SHFL_IDX:
        return seg + (int)(a % (unsigned)w);
    case OP_SHFL_UP:
        return (int)a > l - seg ? l : l - (int)a;
    case OP_SHFL_DOWN:
        return a >= (unsigned)(seg + w - l) ? l : l + (int)a;
    case OP_SHFL_XOR: {
        unsigned s = (unsigned)l ^ a;
        return s >= (unsigned)(seg + w) ? l : (int)s;
    }
    default:
        return l;
    }
}

/* Every lane of f's mask has posted the same collective: compute all results. */
void complete(fiber *f) {
    int base = f->warp * 32;
    unsigned mask = f->mask, ballot = 0;
    for (int l = 0; l < 32; l++)
        if ((mask >> l & 1) && E.fibers[base + l].value != 0) ballot |= 1u << l;
    for (int l = 0; l < 32; l++) {
        if (!(mask >> l & 1)) continue;
        fiber *g = &E.fibers[base + l];
        switch (g->op) {
        case OP_BALLOT:
            g->result = ballot;
            break;
        case OP_ANY:
            g->result = ballot != 0;
            break;
        case OP_ALL:
            g->result = ballot == mask;
            break;
        case OP_MATCH_ANY: {
            unsigned same = 0;
            for (int k = 0; k < 32; k++)
                if ((mask >> k & 1) && E.fibers[base + k].value == g->value) same |= 1u << k;
            g->result = same;
            break;
        }
        case OP_SYNCWARP:
            g->result = 0;
            break;
        default: {
            int src = shuffle_source(g);
            if (!(mask >> src & 1))
                fail(g,
                     "%s at %s:%d reads lane %d, which is not in the mask 0x%08x (undefined "
                     "on the GPU)",
                     op_name(g->op), g->wait.file, g->wait.line, src, mask);
            g->result = E.fibers[base + src].value;
        }
        }
        g->state = RUNNABLE;
    }
}

} // namespace

/* ---- what the shim calls --------------------------------------------------------------------- */

void syncthreads(site where) {
    fiber *f = in_kernel("__syncthreads()", where);
    f->state = AT_BARRIER;
    f->wait = where;
    park();
}

uint64_t warp_collective(site where, warp_op op, unsigned mask, uint64_t value, int arg,
                         int width) {
    fiber *f = in_kernel(op_name(op), where);
    if (!(mask >> f->lane & 1))
        fail(f, "%s at %s:%d: the mask 0x%08x does not include the calling lane %d", op_name(op),
             where.file, where.line, mask, f->lane);
    if (is_shuffle(op) && (width < 1 || width > 32 || (width & (width - 1))))
        fail(f, "%s at %s:%d: width %d is not a power of two in [1, 32]", op_name(op), where.file,
             where.line, width);
    f->op = op, f->mask = mask, f->value = value, f->arg = arg, f->width = width;
    f->wait = where;
    f->state = AT_WARP;
    int base = f->warp * 32;
    bool all_here = true;
    for (int l = 0; l < 32; l++) {
        bool named = mask >> l & 1;
        if (base + l >= E.nthreads) {
            if (named)
                fail(f,
                     "%s at %s:%d: the mask 0x%08x names lane %d, but this warp has only %d "
                     "threads (block of %d)",
                     op_name(op), where.file, where.line, mask, l, E.nthreads - base, E.nthreads);
            continue;
        }
        fiber *g = &E.fibers[base + l];
        if (g == f) continue;
        /* A lane waiting for this one is either in the same collective (same mask, same op),
         * or in a collective of its own that this lane has yet to reach (an earlier call in
         * this lane's program order; independent thread scheduling allows that), never at the
         * same call with another mask. */
        if (g->state == AT_WARP && (g->mask >> f->lane & 1)) {
            if (g->mask != mask && same_site(g->wait, where))
                fail(f,
                     "mismatched warp masks: lane %d calls %s at %s:%d with mask 0x%08x, lane "
                     "%d calls it with mask 0x%08x",
                     f->lane, op_name(op), where.file, where.line, mask, g->lane, g->mask);
            if (g->mask == mask && (g->op != op || g->width != width))
                fail(f,
                     "lanes of mask 0x%08x call different warp intrinsics: lane %d %s at "
                     "%s:%d (width %d), lane %d %s at %s:%d (width %d)",
                     mask, f->lane, op_name(op), where.file, where.line, width, g->lane,
                     op_name(g->op), g->wait.file, g->wait.line, g->width);
        }
        if (!named) continue;
        if (g->state == EXITED || g->state == AT_BARRIER) fail_warp_stall(f, g);
        /* Still running, or finishing a collective of its own that does not involve this
         * lane: this one waits until it arrives. */
        if (g->state == RUNNABLE || g->mask != mask) all_here = false;
    }
    if (all_here)
        complete(f);
    else
        park();
    return f->result;
}

void *dynamic_smem() {
    in_kernel("dynamic shared memory", site{"(MS_DYNAMIC_SMEM)", 0});
    return E.dyn;
}

void *static_smem(const void *key, size_t bytes, site where) {
    fiber *f = in_kernel("MS_SHARED", where);
    for (const shared_var &v : E.shared)
        if (v.key == key) return v.mem;
    E.shared_bytes += bytes;
    if (E.shared_bytes > SMEM_LIMIT)
        fail(f,
             "static shared memory reaches %zu bytes at %s:%d, over the 48 KiB a block may "
             "declare",
             E.shared_bytes, where.file, where.line);
    void *mem = std::malloc(bytes ? bytes : 1);
    if (!mem) fail(f, "out of host memory for %zu bytes of shared memory", bytes);
    std::memset(mem, 0xff, bytes);
    E.shared.push_back(shared_var{key, mem, bytes});
    return mem;
}

void trap(site where, const char *what) {
    fiber *f = in_kernel(what, where);
    fail(f, "%s at %s:%d", what, where.file, where.line);
}

namespace {

void run_block(unsigned bx, unsigned by, unsigned bz, bool reverse) {
    g_block_idx = uint3{bx, by, bz};
    if (E.dyn_bytes) {
        E.dyn = std::malloc(E.dyn_bytes);
        if (!E.dyn)
            fail(nullptr, "out of host memory for %zu bytes of dynamic shared memory", E.dyn_bytes);
        std::memset(E.dyn, 0xff, E.dyn_bytes);
    }
    unsigned dx = g_block_dim.x, dy = g_block_dim.y;
    for (int t = 0; t < E.nthreads; t++) {
        fiber &f = E.fibers[t];
        f.idx = uint3{(unsigned)t % dx, ((unsigned)t / dx) % dy, (unsigned)t / (dx * dy)};
        f.tid = t, f.lane = t % 32, f.warp = t / 32;
        f.state = RUNNABLE;
        f.stack = E.stacks[t];
        f.fake_stack = nullptr;
#ifdef SIMT_ASAN
        /* The previous fiber on this stack never returned from fiber_main: clear its redzones. */
        __asan_unpoison_memory_region(f.stack, STACK_BYTES);
#endif
        if (getcontext(&f.ctx) != 0) fail(nullptr, "getcontext failed");
        f.ctx.uc_stack.ss_sp = f.stack;
        f.ctx.uc_stack.ss_size = STACK_BYTES;
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, fiber_main, 0);
    }
    for (;;) {
        bool ran = false, live = false;
        for (int i = 0; i < E.nthreads; i++) {
            fiber *f = &E.fibers[reverse ? E.nthreads - 1 - i : i];
            if (f->state == RUNNABLE) {
                resume(f);
                ran = true;
            }
            live |= f->state != EXITED;
        }
        if (!live) break;
        if (!ran) resolve_stall();
    }
    for (shared_var &v : E.shared) std::free(v.mem);
    E.shared.clear();
    E.shared_bytes = 0;
    std::free(E.dyn);
    E.dyn = nullptr;
}

} // namespace

void launch(const char *kernel, site where, dim3 grid, dim3 block, size_t dynamic_smem_bytes,
            cudaStream_t stream, const std::function<void()> &body) {
    /* Every launch completes before it returns, so a stream is in order once the library work
     * queued on it before this launch (an NCCL collective) has completed. */
    stream_wait(stream);
    /* One grid at a time in the process: E is the one emulator (the NCCL tests' ranks are host
     * threads that launch kernels of their own). */
    std::lock_guard<std::recursive_mutex> hold(api_mutex());
    if (E.active) {
        std::fprintf(stderr, "simt: kernel %s launched at %s:%d from inside kernel %s\n", kernel,
                     where.file, where.line, E.kernel);
        std::abort();
    }
    unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
    if (!grid.x || !grid.y || !grid.z || !threads || threads > MAX_THREADS || block.z > 64 ||
        grid.x > INT_MAX || grid.y > 65535 || grid.z > 65535) {
        set_last_error(cudaErrorInvalidConfiguration);
        return;
    }
    if (dynamic_smem_bytes > SMEM_LIMIT) {
        set_last_error(cudaErrorInvalidValue);
        return;
    }
    E.active = true;
    E.kernel = kernel;
    E.launched_at = where;
    E.body = &body;
    E.nthreads = (int)threads;
    E.dyn_bytes = dynamic_smem_bytes;
    g_block_dim = block;
    g_grid_dim = grid;
    if ((int)E.fibers.size() < E.nthreads) E.fibers.resize((size_t)E.nthreads);
    while ((int)E.stacks.size() < E.nthreads) E.stacks.push_back(new_stack());
    unsigned long long linear = 0;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) run_block(x, y, z, (linear++ & 1) != 0);
    E.active = false;
    E.kernel = nullptr;
    E.body = nullptr;
}

} // namespace simt
