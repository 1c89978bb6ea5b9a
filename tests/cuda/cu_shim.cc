/* tests/cuda/cu_shim.cc — the CPU shim's engine: launches, fibers, barriers, warp operations.
 *
 * A launch runs its blocks one after another. A block is nthr fibers (mmap'd stacks
 * with a guard page, kept for the life of the process) and a scheduler loop on the caller's
 * stack:
 *
 *     round: the fibers in state RUN, permuted by the thread order, are resumed one by one;
 *            each runs until it blocks or yields:
 *       RUN --__syncthreads--> BAR  --(last thread arrives: same call site)--> RUN
 *       RUN --warp op-------->  WARP --(every lane of the mask there, same mask)--> RUN
 *       RUN --atomic/fence----> RUN (yield: resumed next round)
 *       RUN --return----------> DONE
 *     the block ends when every fiber is DONE; a round with no RUN fiber otherwise is a
 *     deadlock: a lane or thread that never comes.
 *
 * Invariants:
 *   1. only the scheduler resumes fibers, and only fibers in state RUN;
 *   2. a fiber changes another fiber's state only from BAR/WARP to RUN (release), so the
 *      round's list stays valid while it runs;
 *   3. on an error (fail) the block's fibers are abandoned where they stand and never resumed;
 *      their stacks are reused from the top by the next launch (shadow cleared under ASan).
 * Under AddressSanitizer every switch is announced with __sanitizer_start_switch_fiber /
 * __sanitizer_finish_switch_fiber, so ASan knows which stack is live.
 */
#include "cu_shim.h"

#include <ctype.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <string>
#include <utility>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define CU_SHIM_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CU_SHIM_ASAN 1
#endif
#endif
#ifdef CU_SHIM_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

cu_shim_builtins cu_shim_bi = {{0, 0, 0}, {0, 0, 0}, dim3(1, 1, 1), dim3(1, 1, 1)};

/* ---- context switch ----------------------------------------------------------------------
 * x86-64: a few instructions that save the callee-saved registers, the x87 control word and
 * MXCSR on the old stack and restore them from the new one (tens of nanoseconds; swapcontext
 * makes a sigprocmask system call each way, ~1 us here). Elsewhere, or with
 * -DCU_SHIM_UCONTEXT: ucontext. */
#if defined(__x86_64__) && defined(__linux__) && !defined(CU_SHIM_UCONTEXT)
#define CU_SHIM_ASM_SWITCH 1
extern "C" void cu_shim_ctx_switch(void **save_sp, void *to_sp);
__asm__(".text\n"
        ".globl cu_shim_ctx_switch\n"
        ".hidden cu_shim_ctx_switch\n"
        ".type cu_shim_ctx_switch, @function\n"
        "cu_shim_ctx_switch:\n"
        "  pushq %rbp\n"
        "  pushq %rbx\n"
        "  pushq %r12\n"
        "  pushq %r13\n"
        "  pushq %r14\n"
        "  pushq %r15\n"
        "  subq $16, %rsp\n"
        "  stmxcsr 8(%rsp)\n"
        "  fnstcw (%rsp)\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  fldcw (%rsp)\n"
        "  ldmxcsr 8(%rsp)\n"
        "  addq $16, %rsp\n"
        "  popq %r15\n"
        "  popq %r14\n"
        "  popq %r13\n"
        "  popq %r12\n"
        "  popq %rbx\n"
        "  popq %rbp\n"
        "  ret\n"
        ".size cu_shim_ctx_switch, .-cu_shim_ctx_switch\n");
struct cu_shim_ctx { void *sp; };
#else
#include <ucontext.h>
struct cu_shim_ctx { ucontext_t uc; };
#endif

namespace {

enum { F_RUN, F_BAR, F_WARP, F_DONE };

/* yields without any barrier, warp operation or exit in between: a thread spinning on
 * something no fiber of this block will change (another block's flag) */
const unsigned long long STALL_LIMIT = 1ull << 24;
const size_t SMEM_NO_OPT_IN = 48 * 1024;

struct Fiber {
    cu_shim_ctx ctx;
    char *map = nullptr; /* mapping: guard page + stack */
    size_t map_len = 0;
    char *stack = nullptr;
    size_t stack_len = 0;
    uint3 tid = {0, 0, 0};
    int lin = 0; /* linear thread id; lane = lin % 32 */
    int st = F_DONE;
    /* what the fiber waits at (BAR or WARP) */
    const char *file = "";
    int line = 0;
    int kind = 0; /* barrier kind or warp op */
    unsigned int mask = 0;
    int width = 32, arg = 0, size = 4;
    unsigned long long val = 0, res = 0;
    void *fake = nullptr; /* ASan fake stack while switched out */
    char *low = nullptr;  /* ASan: frame of the last switch out; live frames lie above it */
};

struct Shim {
    bool inited = false;
    int order = CU_SHIM_FORWARD;
    unsigned long long seed = 0x5eedull;
    size_t stack_len = 0;
    size_t smem_max = 227 * 1024;
    std::vector<Fiber *> fib;
    cu_shim_ctx sched_ctx;
    Fiber *cur = nullptr;
    const void *main_bottom = nullptr; /* the scheduler's stack, for ASan */
    size_t main_size = 0;
    /* the launch */
    bool active = false;
    const char *name = "";
    dim3 grid, block;
    size_t smem = 0;
    unsigned char *smem_buf = nullptr;
    cu_shim_body_fn body = nullptr;
    void *ctx = nullptr;
    unsigned long long launch_no = 0, rng = 0;
    /* the block */
    int nthr = 0, n_done = 0, n_bar = 0;
    bool err = false;
    unsigned long long stalled = 0;
    std::vector<int> runq;
    /* results */
    cudaError_t last = cudaSuccess;
    std::string msg;
    std::vector<std::pair<std::string, int>> smem_attr; /* kernel text -> opt-in bytes */
    unsigned long long switches = 0, launches = 0, blocks = 0, threads = 0;
    long long clock = 0;

    ~Shim() {
        for (Fiber *f : fib) {
            if (f->map) munmap(f->map, f->map_len);
            delete f;
        }
    }
};
Shim S;

unsigned long long splitmix(unsigned long long *s) {
    unsigned long long z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
unsigned long long below(unsigned long long n) { return splitmix(&S.rng) % n; }

#ifndef CU_SHIM_ASAN
void say(const char *m) {
    if (write(2, m, strlen(m)) < 0) return;
}
/* a fault in a fiber's guard page: say so, then fault again with the default action */
void on_segv(int, siginfo_t *si, void *) {
    const char *a = static_cast<const char *>(si->si_addr);
    for (const Fiber *f : S.fib) {
        if (a < f->map || a >= f->stack) continue;
        char kb[24];
        snprintf(kb, sizeof kb, "%zu", S.stack_len / 1024);
        say("cu_shim: a fiber overflowed its stack in ");
        say(S.name);
        say(" (");
        say(kb);
        say(" KiB each: raise CU_SHIM_STACK_KB, or shrink the kernel's local arrays)\n");
        break;
    }
}
#endif

void print_stats(void) {
    fprintf(stderr, "cu_shim: %llu launches, %llu blocks, %llu threads, %llu fiber switches\n",
            S.launches, S.blocks, S.threads, S.switches);
}

void init(void) {
    if (S.inited) return;
    S.inited = true;
    if (getenv("CU_SHIM_STATS") && atoi(getenv("CU_SHIM_STATS")) > 0) atexit(print_stats);
    const char *e = getenv("CU_SHIM_ORDER");
    if (e && *e) {
        int o = atoi(e);
        if (o < 0 || o >= CU_SHIM_N_ORDERS) {
            fprintf(stderr, "cu_shim: CU_SHIM_ORDER=%s: expected 0..%d\n", e, CU_SHIM_N_ORDERS - 1);
            abort();
        }
        S.order = o;
    }
    if ((e = getenv("CU_SHIM_SEED")) && *e) S.seed = strtoull(e, nullptr, 0);
#ifdef CU_SHIM_ASAN
    size_t kb = 256; /* ASan's redzones make frames several times larger */
#else
    size_t kb = 64;
#endif
    if ((e = getenv("CU_SHIM_STACK_KB")) && *e) kb = strtoull(e, nullptr, 0);
    if (kb < 16) kb = 16;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    S.stack_len = (kb * 1024 + page - 1) / page * page;
    if ((e = getenv("CU_SHIM_SMEM_MAX")) && *e) S.smem_max = strtoull(e, nullptr, 0);
#ifndef CU_SHIM_ASAN /* ASan reports stack overflows itself */
    struct sigaction old;
    if (sigaction(SIGSEGV, nullptr, &old) == 0 && old.sa_handler == SIG_DFL &&
        !(old.sa_flags & SA_SIGINFO)) {
        static char alt[64 * 1024];
        stack_t ss = {};
        ss.ss_sp = alt;
        ss.ss_size = sizeof alt;
        struct sigaction sa = {};
        sa.sa_sigaction = on_segv;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
        sigemptyset(&sa.sa_mask);
        if (sigaltstack(&ss, nullptr) == 0) sigaction(SIGSEGV, &sa, nullptr);
    }
#endif
}

std::string tid_str(uint3 t) {
    char b[48];
    snprintf(b, sizeof b, "(%u,%u,%u)", t.x, t.y, t.z);
    return b;
}

const char *op_name(int op) {
    static const char *const names[CU_SHIM_W_N] = {
        "__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync", "__ballot_sync",
        "__any_sync", "__all_sync", "__syncwarp", "__match_any_sync", "__match_all_sync",
        "__reduce_add_sync", "__reduce_min_sync", "__reduce_max_sync", "__reduce_min_sync",
        "__reduce_max_sync", "__reduce_and_sync", "__reduce_or_sync", "__reduce_xor_sync"};
    return op >= 0 && op < CU_SHIM_W_N ? names[op] : "?";
}
const char *bar_name(int kind) {
    static const char *const names[4] = {"__syncthreads", "__syncthreads_count",
                                         "__syncthreads_and", "__syncthreads_or"};
    return kind >= 0 && kind < 4 ? names[kind] : "?";
}

std::string launch_str(void) {
    char b[512];
    snprintf(b, sizeof b, "%s<<<(%u,%u,%u), (%u,%u,%u), %zu>>>", S.name, S.grid.x, S.grid.y,
             S.grid.z, S.block.x, S.block.y, S.block.z, S.smem);
    return b;
}

void record(cudaError_t e, const std::string &m) {
    S.last = e;
    S.msg = m;
    fprintf(stderr, "%s\n", m.c_str());
}

/* an error found while a block runs: stops the launch */
__attribute__((format(printf, 1, 2))) void fail(const char *fmt, ...) {
    if (S.err) return;
    S.err = true;
    char detail[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    char head[256];
    snprintf(head, sizeof head, " block (%u,%u,%u), order %s (seed %llu, launch #%llu): ",
             cu_shim_bi.block_idx.x, cu_shim_bi.block_idx.y, cu_shim_bi.block_idx.z,
             cu_shim_order_name(S.order), S.seed, S.launch_no);
    record(cudaErrorLaunchFailure, "cu_shim: " + launch_str() + head + detail);
}

/* an error in the launch itself (configuration): nothing runs */
__attribute__((format(printf, 2, 3))) void refuse(cudaError_t e, const char *fmt, ...) {
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    record(e, "cu_shim: " + launch_str() + ": " + detail + " -> " + cudaGetErrorName(e));
}

/* a device-side call made outside any kernel */
void outside(const char *what) {
    record(cudaErrorLaunchFailure,
           std::string("cu_shim: ") + what + " called outside a kernel (no launch is running)");
}

void ctx_switch(cu_shim_ctx *from, cu_shim_ctx *to) {
#ifdef CU_SHIM_ASM_SWITCH
    cu_shim_ctx_switch(&from->sp, to->sp);
#else
    swapcontext(&from->uc, &to->uc);
#endif
}

/* scheduler -> fiber */
void resume(Fiber *f) {
    S.cur = f;
    cu_shim_bi.thread_idx = f->tid;
    S.switches++;
#ifdef CU_SHIM_ASAN
    void *fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, f->stack, f->stack_len);
#endif
    ctx_switch(&S.sched_ctx, &f->ctx);
#ifdef CU_SHIM_ASAN
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
    S.cur = nullptr;
}

/* fiber -> scheduler; returns when the scheduler resumes this fiber (never if final) */
void to_sched(Fiber *f, bool final) {
#ifdef CU_SHIM_ASAN
    f->low = static_cast<char *>(__builtin_frame_address(0));
    __sanitizer_start_switch_fiber(final ? nullptr : &f->fake, S.main_bottom, S.main_size);
#else
    (void)final;
#endif
    ctx_switch(&f->ctx, &S.sched_ctx);
#ifdef CU_SHIM_ASAN
    __sanitizer_finish_switch_fiber(f->fake, &S.main_bottom, &S.main_size);
#endif
}

Fiber *lane_fiber(const Fiber *f, int lane) { return S.fib[(size_t)((f->lin & ~31) + lane)]; }

std::string waits_str(const Fiber *g) {
    char b[512];
    switch (g->st) {
    case F_RUN: return "has not reached it";
    case F_DONE: return "has returned";
    case F_BAR:
        snprintf(b, sizeof b, "waits at %s at %s:%d", bar_name(g->kind), g->file, g->line);
        return b;
    default:
        snprintf(b, sizeof b, "waits in %s(mask 0x%08x) at %s:%d", op_name(g->kind), g->mask,
                 g->file, g->line);
        return b;
    }
}

void fiber_exit(Fiber *f) {
    f->st = F_DONE;
    S.n_done++;
    S.stalled = 0;
    if (S.n_bar > 0) {
        for (int i = 0; i < S.nthr; i++) {
            const Fiber *g = S.fib[(size_t)i];
            if (g->st != F_BAR) continue;
            fail("thread %s returned while %d thread(s) wait at %s at %s:%d (thread %s first): "
                 "every thread of the block must reach every __syncthreads",
                 tid_str(f->tid).c_str(), S.n_bar, bar_name(g->kind), g->file, g->line,
                 tid_str(g->tid).c_str());
            break;
        }
    } else {
        const int lane = f->lin & 31;
        for (int j = 0; j < 32 && (f->lin & ~31) + j < S.nthr; j++) {
            const Fiber *g = lane_fiber(f, j);
            if (g->st == F_WARP && ((g->mask >> lane) & 1u)) {
                fail("lane %d (thread %s) returned while lane %d (thread %s) waits for it in "
                     "%s(mask 0x%08x) at %s:%d",
                     lane, tid_str(f->tid).c_str(), j, tid_str(g->tid).c_str(), op_name(g->kind),
                     g->mask, g->file, g->line);
                break;
            }
        }
    }
    to_sched(f, true);
    abort(); /* never resumed */
}

void fiber_entry(void) {
    Fiber *f = S.cur;
#ifdef CU_SHIM_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &S.main_bottom, &S.main_size);
#endif
    S.body(S.ctx);
    fiber_exit(f);
}

bool same_site(const Fiber *a, const Fiber *b) {
    return a->line == b->line && (a->file == b->file || strcmp(a->file, b->file) == 0);
}

void deadlock(void) {
    for (int i = 0; i < S.nthr; i++) {
        const Fiber *f = S.fib[(size_t)i];
        if (f->st != F_WARP) continue;
        for (int j = 0; j < 32; j++) {
            if (!((f->mask >> j) & 1u)) continue;
            const Fiber *g = lane_fiber(f, j);
            if (g->st == F_WARP && g->mask == f->mask) continue;
            fail("thread %s (lane %d) waits in %s(mask 0x%08x) at %s:%d, but lane %d (thread %s) "
                 "%s: every lane named in the mask must call the same primitive with the same mask",
                 tid_str(f->tid).c_str(), f->lin & 31, op_name(f->kind), f->mask, f->file,
                 f->line, j, tid_str(g->tid).c_str(), waits_str(g).c_str());
            return;
        }
    }
    fail("no thread can run (%d at a barrier, %d returned, of %d)", S.n_bar, S.n_done, S.nthr);
}

/* Under ASan: the frames a fiber left behind (it never returns from fiber_entry; an aborted
 * one stops anywhere) keep their redzones poisoned; clear them before the stack is reused.
 * They lie between its last switch out and the top (1 KiB below: the switch's own frame). */
void unpoison_used(Fiber *f) {
#ifdef CU_SHIM_ASAN
    if (!f->low) return;
    char *lo = f->low - 1024 > f->stack ? f->low - 1024 : f->stack;
    ASAN_UNPOISON_MEMORY_REGION(lo, (size_t)(f->stack + f->stack_len - lo));
    f->low = nullptr;
#else
    (void)f;
#endif
}

#ifdef CU_SHIM_ASM_SWITCH
/* a fresh context at the top of f's stack: what cu_shim_ctx_switch pops, then fiber_entry
 * "returns" into with the stack aligned as after a call (its own return address: 0) */
void prepare(Fiber *const f) {
    f->st = F_RUN;
    f->fake = nullptr;
    unpoison_used(f);
    uintptr_t top = ((uintptr_t)(f->stack + f->stack_len)) & ~(uintptr_t)15;
    uint64_t *sp = reinterpret_cast<uint64_t *>(top);
    *--sp = 0;                                   /* fiber_entry's return address: none */
    *--sp = (uint64_t)(uintptr_t)&fiber_entry;   /* popped by ret */
    for (int r = 0; r < 6; r++) *--sp = 0;       /* rbp rbx r12 r13 r14 r15 */
    sp -= 2;                                     /* x87 control word, MXCSR: the caller's */
    unsigned short cw;
    __asm__ volatile("fnstcw %0" : "=m"(cw));
    const unsigned int mxcsr = __builtin_ia32_stmxcsr();
    memcpy(sp, &cw, sizeof cw);
    memcpy(reinterpret_cast<char *>(sp) + 8, &mxcsr, sizeof mxcsr);
    f->ctx.sp = sp;
}
#else
/* a fresh context at the top of f's stack, entering fiber_entry (getcontext returns once:
 * the context is rebuilt by makecontext, never resumed here; its own function keeps the
 * caller's variables out of -Wclobbered's view) */
__attribute__((noinline)) void prepare(Fiber *const f) {
    f->st = F_RUN;
    f->fake = nullptr;
    unpoison_used(f);
    getcontext(&f->ctx.uc);
    f->ctx.uc.uc_stack.ss_sp = f->stack;
    f->ctx.uc.uc_stack.ss_size = f->stack_len;
    f->ctx.uc.uc_link = &S.sched_ctx.uc;
    makecontext(&f->ctx.uc, fiber_entry, 0);
}
#endif

void run_block(void) {
    for (int i = 0; i < S.nthr; i++) prepare(S.fib[(size_t)i]);
    S.n_done = S.n_bar = 0;
    S.stalled = 0;
    while (!S.err) {
        S.runq.clear();
        for (int i = 0; i < S.nthr; i++)
            if (S.fib[(size_t)i]->st == F_RUN) S.runq.push_back(i);
        if (S.runq.empty()) {
            if (S.n_done != S.nthr) deadlock();
            break;
        }
        const size_t n = S.runq.size();
        if (S.order == CU_SHIM_REVERSE) {
            for (size_t k = 0; k < n / 2; k++) std::swap(S.runq[k], S.runq[n - 1 - k]);
        } else if (S.order == CU_SHIM_RANDOM) {
            for (size_t k = n - 1; k > 0; k--) std::swap(S.runq[k], S.runq[(size_t)below(k + 1)]);
        }
        for (size_t k = 0; k < n && !S.err; k++) resume(S.fib[(size_t)S.runq[k]]);
    }
#ifdef CU_SHIM_ASAN
    if (S.err) /* abandoned frames leave their redzones behind */
        for (int i = 0; i < S.nthr; i++)
            ASAN_UNPOISON_MEMORY_REGION(S.fib[(size_t)i]->stack, S.fib[(size_t)i]->stack_len);
#endif
}

bool ensure_fibers(int n) {
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    while (S.fib.size() < (size_t)n) {
        Fiber *f = new Fiber();
        f->map_len = S.stack_len + page;
        void *m = mmap(nullptr, f->map_len, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
        if (m == MAP_FAILED) {
            delete f;
            return false;
        }
        f->map = static_cast<char *>(m);
        mprotect(f->map, page, PROT_NONE); /* guard: an overflow faults instead of corrupting */
        f->stack = f->map + page;
        f->stack_len = S.stack_len;
        S.fib.push_back(f);
    }
    return true;
}

/* kernel text as CU_LAUNCH and cudaFuncSetAttribute name it, without spaces, outer
 * parentheses, a leading & or ::, or a cast */
std::string norm_kernel(const std::string &text) {
    std::string s;
    for (char c : text)
        if (!isspace((unsigned char)c)) s += c;
    for (bool changed = true; changed && !s.empty();) {
        changed = false;
        if (s.compare(0, 2, "::") == 0) { s.erase(0, 2); changed = true; continue; }
        if (s[0] == '&') { s.erase(0, 1); changed = true; continue; }
        for (const char *cast : {"reinterpret_cast<", "static_cast<", "const_cast<"}) {
            if (s.compare(0, strlen(cast), cast) != 0) continue;
            size_t p = s.find(">(");
            if (p != std::string::npos && s.back() == ')') {
                s = s.substr(p + 2, s.size() - p - 3);
                changed = true;
            }
            break;
        }
        if (changed || s[0] != '(') continue;
        int depth = 0;
        size_t close = std::string::npos;
        for (size_t i = 0; i < s.size(); i++) {
            if (s[i] == '(') depth++;
            else if (s[i] == ')' && --depth == 0) { close = i; break; }
        }
        if (close == std::string::npos) break;
        if (close == s.size() - 1) s = s.substr(1, s.size() - 2); /* (k) */
        else s.erase(0, close + 1);                                /* (const void *)k */
        changed = true;
    }
    return s;
}

int smem_opt_in(const char *name) {
    const std::string k = norm_kernel(name);
    for (const auto &a : S.smem_attr)
        if (a.first == k) return a.second;
    return -1;
}

void block_of(unsigned long long b, uint3 *idx) {
    idx->x = (unsigned int)(b % S.grid.x);
    b /= S.grid.x;
    idx->y = (unsigned int)(b % S.grid.y);
    idx->z = (unsigned int)(b / S.grid.y);
}

unsigned long long gcd(unsigned long long a, unsigned long long b) {
    while (b) { unsigned long long t = a % b; a = b; b = t; }
    return a;
}

} // namespace

/* ---- launches ---------------------------------------------------------------------------- */

void cu_shim_launch_impl(const cu_shim_dim &grid, const cu_shim_dim &block, size_t smem_bytes,
                         cudaStream_t stream, cu_shim_body_fn body, void *ctx, const char *name) {
    (void)stream; /* synchronous: every launch completes before it returns */
    init();
    if (S.active) {
        /* keep the running launch's description: report with the nested name only */
        record(cudaErrorNotSupported, std::string("cu_shim: launch of ") + name +
                                          " from inside a kernel (dynamic parallelism) is not "
                                          "supported -> cudaErrorNotSupported");
        return;
    }
    S.name = name ? name : "(kernel)";
    S.grid = dim3(grid.x, grid.y, grid.z);
    S.block = dim3(block.x, block.y, block.z);
    S.smem = smem_bytes;
    const unsigned long long nthr = (unsigned long long)block.x * block.y * block.z;
    if (grid.bad || block.bad)
        return refuse(cudaErrorInvalidConfiguration,
                      "a grid or block size is negative or over 32 bits");
    if (!grid.x || !grid.y || !grid.z || !block.x || !block.y || !block.z)
        return refuse(cudaErrorInvalidConfiguration, "a grid or block dimension is zero");
    if (block.x > 1024 || block.y > 1024 || block.z > 64 || nthr > 1024)
        return refuse(cudaErrorInvalidConfiguration,
                      "%llu threads per block (at most 1024; x, y <= 1024, z <= 64)", nthr);
    if (grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535)
        return refuse(cudaErrorInvalidConfiguration,
                      "grid over the limits (x < 2^31, y and z <= 65535)");
    if (smem_bytes > S.smem_max)
        return refuse(cudaErrorInvalidValue,
                      "%zu bytes of dynamic shared memory, over the %zu a block can have",
                      smem_bytes, S.smem_max);
    const int opt_in = smem_opt_in(S.name);
    if (smem_bytes > SMEM_NO_OPT_IN && (opt_in < 0 || (size_t)opt_in < smem_bytes)) {
        return refuse(cudaErrorInvalidValue,
                      "%zu bytes of dynamic shared memory need "
                      "cudaFuncSetAttribute(%s, cudaFuncAttributeMaxDynamicSharedMemorySize, "
                      ">= %zu) before the launch (%s)",
                      smem_bytes, S.name, smem_bytes,
                      opt_in < 0 ? "none recorded under that name" : "a smaller value is set");
    }
    if (!ensure_fibers((int)nthr))
        return refuse(cudaErrorLaunchOutOfResources, "cannot map %llu fiber stacks", nthr);
    S.smem_buf = static_cast<unsigned char *>(malloc(smem_bytes));
    if (!S.smem_buf && smem_bytes)
        return refuse(cudaErrorMemoryAllocation, "cannot allocate the shared memory");

    S.launch_no++;
    S.launches++;
    S.rng = S.seed ^ (S.launch_no * 0x2545f4914f6cdd1dull);
    S.body = body;
    S.ctx = ctx;
    S.nthr = (int)nthr;
    S.err = false;
    S.active = true;
    for (int i = 0; i < S.nthr; i++) {
        Fiber *f = S.fib[(size_t)i];
        f->lin = i;
        f->tid.x = (unsigned int)i % block.x;
        f->tid.y = (unsigned int)i / block.x % block.y;
        f->tid.z = (unsigned int)i / (block.x * block.y);
    }
    const dim3 saved_bd = cu_shim_bi.block_dim, saved_gd = cu_shim_bi.grid_dim;
    cu_shim_bi.block_dim = S.block;
    cu_shim_bi.grid_dim = S.grid;

    /* block order: forward, reverse, or a random permutation (Fisher-Yates when it fits in
     * memory, else an affine one: b = (a + k * stride) mod n with stride coprime to n) */
    const unsigned long long nb = (unsigned long long)grid.x * grid.y * grid.z;
    std::vector<unsigned int> perm;
    unsigned long long a = 0, stride = 1;
    if (S.order == CU_SHIM_RANDOM) {
        if (nb <= (1ull << 22)) {
            perm.resize((size_t)nb);
            for (unsigned long long k = 0; k < nb; k++) perm[(size_t)k] = (unsigned int)k;
            for (unsigned long long k = nb - 1; k > 0; k--)
                std::swap(perm[(size_t)k], perm[(size_t)below(k + 1)]);
        } else {
            a = below(nb);
            do stride = below(nb - 1) + 1; while (gcd(stride, nb) != 1);
        }
    }
    for (unsigned long long k = 0; k < nb && !S.err; k++) {
        unsigned long long b = k;
        if (S.order == CU_SHIM_REVERSE) b = nb - 1 - k;
        else if (S.order == CU_SHIM_RANDOM)
            b = perm.empty() ? (unsigned long long)(((cu_shim_u128)k * stride + a) % nb)
                             : perm[(size_t)k];
        block_of(b, &cu_shim_bi.block_idx);
        if (smem_bytes) memset(S.smem_buf, 0xff, smem_bytes);
        S.blocks++;
        S.threads += nthr;
        run_block();
    }
    free(S.smem_buf);
    S.smem_buf = nullptr;
    S.active = false;
    cu_shim_bi.block_dim = saved_bd;
    cu_shim_bi.grid_dim = saved_gd;
}

void *cu_shim_dyn_smem(void) { return S.active ? S.smem_buf : nullptr; }
size_t cu_shim_dyn_smem_bytes(void) { return S.active ? S.smem : 0; }

/* ---- barriers ---------------------------------------------------------------------------- */

int cu_shim_barrier(int kind, int pred, const char *file, int line) {
    Fiber *f = S.cur;
    if (!f) {
        outside(bar_name(kind));
        return 0;
    }
    if (S.n_done > 0) {
        for (int i = 0; i < S.nthr; i++) {
            const Fiber *g = S.fib[(size_t)i];
            if (g->st != F_DONE) continue;
            fail("thread %s reached %s at %s:%d after thread %s returned: every thread of the "
                 "block must reach every __syncthreads",
                 tid_str(f->tid).c_str(), bar_name(kind), file, line, tid_str(g->tid).c_str());
            break;
        }
        to_sched(f, false);
        return 0;
    }
    f->st = F_BAR;
    f->kind = kind;
    f->val = (unsigned long long)(pred != 0);
    f->file = file;
    f->line = line;
    if (++S.n_bar == S.nthr) {
        const Fiber *a = S.fib[0];
        int count = 0;
        for (int i = 0; i < S.nthr && !S.err; i++) {
            const Fiber *g = S.fib[(size_t)i];
            if (!same_site(g, a) || g->kind != a->kind)
                fail("threads wait at different barriers: thread %s at %s at %s:%d, thread %s "
                     "at %s at %s:%d",
                     tid_str(a->tid).c_str(), bar_name(a->kind), a->file, a->line,
                     tid_str(g->tid).c_str(), bar_name(g->kind), g->file, g->line);
            count += (int)g->val;
        }
        if (!S.err) {
            for (int i = 0; i < S.nthr; i++) {
                S.fib[(size_t)i]->st = F_RUN;
                S.fib[(size_t)i]->res = (unsigned long long)count;
            }
            S.n_bar = 0;
            S.stalled = 0;
        }
    }
    to_sched(f, false);
    return (int)f->res;
}

void cu_shim_yield(void) {
    Fiber *f = S.cur;
    if (!f) return;
    if (++S.stalled > STALL_LIMIT)
        fail("thread %s yielded %llu times with no barrier, warp operation or return in the "
             "block: does it wait for another block (blocks run one after another here)?",
             tid_str(f->tid).c_str(), STALL_LIMIT);
    to_sched(f, false);
}

long long cu_shim_clock64(void) { return S.clock += 1000; }

/* ---- warp operations --------------------------------------------------------------------- */

unsigned int __activemask(void) {
    const Fiber *f = S.cur;
    if (!f) return 1u;
    unsigned int m = 0;
    for (int j = 0; j < 32 && (f->lin & ~31) + j < S.nthr; j++)
        if (lane_fiber(f, j)->st != F_DONE) m |= 1u << j;
    return m;
}

namespace {

bool is_shfl(int op) { return op <= CU_SHIM_W_SHFL_XOR; }

/* every lane of f's group (mask) is there: compute each lane's result */
void warp_complete(const Fiber *f) {
    const unsigned int mask = f->mask;
    unsigned int ballot = 0;
    for (int j = 0; j < 32; j++) {
        if (!((mask >> j) & 1u)) continue;
        const Fiber *g = lane_fiber(f, j);
        if (g->kind != f->kind || g->width != f->width) {
            fail("lanes %d and %d meet in different warp operations with mask 0x%08x: "
                 "%s(width %d) at %s:%d and %s(width %d) at %s:%d",
                 f->lin & 31, j, mask, op_name(f->kind), f->width, f->file, f->line,
                 op_name(g->kind), g->width, g->file, g->line);
            return;
        }
        if (g->val) ballot |= 1u << j;
    }
    for (int j = 0; j < 32; j++) {
        if (!((mask >> j) & 1u)) continue;
        Fiber *g = lane_fiber(f, j);
        const long long w = g->width, seg = j & ~(g->width - 1);
        long long src = j;
        unsigned long long r = 0;
        switch (g->kind) {
        case CU_SHIM_W_SHFL: src = seg + (g->arg & (g->width - 1)); break;
        case CU_SHIM_W_SHFL_UP: src = j - (long long)(unsigned int)g->arg; if (src < seg) src = j; break;
        case CU_SHIM_W_SHFL_DOWN: src = j + (long long)(unsigned int)g->arg; if (src >= seg + w) src = j; break;
        case CU_SHIM_W_SHFL_XOR: src = j ^ (long long)g->arg; if (src < 0 || src >= seg + w) src = j; break;
        case CU_SHIM_W_BALLOT: r = ballot; break;
        case CU_SHIM_W_ANY: r = ballot != 0; break;
        case CU_SHIM_W_ALL: r = ballot == mask; break;
        case CU_SHIM_W_SYNCWARP: break;
        default: { /* match and reduce over the group */
            unsigned int eq = 0, acc = 0;
            bool first = true;
            for (int k = 0; k < 32; k++) {
                if (!((mask >> k) & 1u)) continue;
                const unsigned long long v = lane_fiber(f, k)->val;
                const unsigned int u = (unsigned int)v;
                if (v == g->val) eq |= 1u << k;
                switch (g->kind) {
                case CU_SHIM_W_ADD: acc += u; break;
                case CU_SHIM_W_MIN_S: if (first || (int)u < (int)acc) acc = u; break;
                case CU_SHIM_W_MAX_S: if (first || (int)u > (int)acc) acc = u; break;
                case CU_SHIM_W_MIN_U: if (first || u < acc) acc = u; break;
                case CU_SHIM_W_MAX_U: if (first || u > acc) acc = u; break;
                case CU_SHIM_W_AND: acc = first ? u : (acc & u); break;
                case CU_SHIM_W_OR: acc |= u; break;
                case CU_SHIM_W_XOR: acc ^= u; break;
                default: break;
                }
                first = false;
            }
            if (g->kind == CU_SHIM_W_MATCH_ANY) r = eq;
            else if (g->kind == CU_SHIM_W_MATCH_ALL) r = eq == mask ? mask : 0u;
            else r = acc;
        }
        }
        if (is_shfl(g->kind)) /* reading a lane outside the mask: undefined on a GPU, poison */
            r = (src >= 0 && src < 32 && ((mask >> src) & 1u)) ? lane_fiber(f, (int)src)->val
                                                               : ~0ull;
        g->res = r;
    }
    for (int j = 0; j < 32; j++)
        if ((mask >> j) & 1u) lane_fiber(f, j)->st = F_RUN;
    S.stalled = 0;
}

} // namespace

unsigned long long cu_shim_warp(int op, unsigned int mask, unsigned long long val, int arg,
                                int width, int size, const char *file, int line) {
    Fiber *f = S.cur;
    if (!f) {
        outside(op_name(op));
        return val;
    }
    const int lane = f->lin & 31, base = f->lin & ~31;
    const int nl = S.nthr - base < 32 ? S.nthr - base : 32;
    const unsigned int exist = nl >= 32 ? ~0u : ((1u << nl) - 1u);
    if (!((mask >> lane) & 1u)) {
        fail("lane %d (thread %s) calls %s at %s:%d with mask 0x%08x, which does not name it",
             lane, tid_str(f->tid).c_str(), op_name(op), file, line, mask);
    } else if (mask & ~exist) {
        fail("%s at %s:%d: mask 0x%08x names lanes that do not exist (the block has %d "
             "threads: warp %d has lanes 0x%08x)",
             op_name(op), file, line, mask, S.nthr, base / 32, exist);
    } else if (is_shfl(op) && (width < 1 || width > 32 || (width & (width - 1)))) {
        fail("%s at %s:%d: width %d is not a power of two in 1..32", op_name(op), file, line,
             width);
    } else {
        for (int j = 0; j < 32; j++) {
            if (!((mask >> j) & 1u)) continue;
            const Fiber *g = lane_fiber(f, j);
            if (g->st == F_DONE) {
                fail("lane %d (thread %s) calls %s(mask 0x%08x) at %s:%d, but lane %d (thread "
                     "%s) has returned",
                     lane, tid_str(f->tid).c_str(), op_name(op), mask, file, line, j,
                     tid_str(g->tid).c_str());
                break;
            }
        }
    }
    if (S.err) {
        to_sched(f, false);
        return 0;
    }
    f->st = F_WARP;
    f->kind = op;
    f->mask = mask;
    f->val = val;
    f->arg = arg;
    f->width = width;
    f->size = size;
    f->file = file;
    f->line = line;
    bool complete = true;
    for (int j = 0; j < 32 && complete; j++) {
        if (!((mask >> j) & 1u)) continue;
        const Fiber *g = lane_fiber(f, j);
        complete = g->st == F_WARP && g->mask == mask;
    }
    if (complete) warp_complete(f);
    to_sched(f, false);
    return f->res;
}

/* ---- errors ------------------------------------------------------------------------------ */

cudaError_t cu_shim_last_error(void) {
    cudaError_t e = S.last;
    S.last = cudaSuccess;
    return e;
}
cudaError_t cudaGetLastError(void) { return cu_shim_last_error(); }
cudaError_t cudaPeekAtLastError(void) { return S.last; }
const char *cu_shim_last_message(void) { return S.msg.c_str(); }

namespace {
struct ErrName { cudaError_t e; const char *name, *text; };
const ErrName err_names[] = {
    {cudaSuccess, "cudaSuccess", "no error"},
    {cudaErrorInvalidValue, "cudaErrorInvalidValue", "invalid argument"},
    {cudaErrorMemoryAllocation, "cudaErrorMemoryAllocation", "out of memory"},
    {cudaErrorInitializationError, "cudaErrorInitializationError", "initialization error"},
    {cudaErrorInvalidConfiguration, "cudaErrorInvalidConfiguration", "invalid configuration argument"},
    {cudaErrorInvalidDevicePointer, "cudaErrorInvalidDevicePointer", "invalid device pointer"},
    {cudaErrorInsufficientDriver, "cudaErrorInsufficientDriver", "CUDA driver version is insufficient for CUDA runtime version"},
    {cudaErrorInvalidDeviceFunction, "cudaErrorInvalidDeviceFunction", "invalid device function"},
    {cudaErrorNoDevice, "cudaErrorNoDevice", "no CUDA-capable device is detected"},
    {cudaErrorInvalidResourceHandle, "cudaErrorInvalidResourceHandle", "invalid resource handle"},
    {cudaErrorNotReady, "cudaErrorNotReady", "device not ready"},
    {cudaErrorIllegalAddress, "cudaErrorIllegalAddress", "an illegal memory access was encountered"},
    {cudaErrorLaunchOutOfResources, "cudaErrorLaunchOutOfResources", "too many resources requested for launch"},
    {cudaErrorLaunchTimeout, "cudaErrorLaunchTimeout", "the launch timed out and was terminated"},
    {cudaErrorAssert, "cudaErrorAssert", "device-side assert triggered"},
    {cudaErrorIllegalInstruction, "cudaErrorIllegalInstruction", "an illegal instruction was encountered"},
    {cudaErrorMisalignedAddress, "cudaErrorMisalignedAddress", "misaligned address"},
    {cudaErrorLaunchFailure, "cudaErrorLaunchFailure", "unspecified launch failure"},
    {cudaErrorNotSupported, "cudaErrorNotSupported", "operation not supported"},
    {cudaErrorUnknown, "cudaErrorUnknown", "unknown error"},
};
} // namespace

const char *cudaGetErrorName(cudaError_t e) {
    for (const ErrName &n : err_names)
        if (n.e == e) return n.name;
    return "cudaErrorUnknown";
}
const char *cudaGetErrorString(cudaError_t e) {
    for (const ErrName &n : err_names)
        if (n.e == e) return n.text;
    return "unknown error";
}

/* ---- a few runtime calls ----------------------------------------------------------------- */

cudaError_t cu_shim_malloc(void **p, size_t bytes) {
    if (!p) return cudaErrorInvalidValue;
    *p = bytes ? malloc(bytes) : nullptr;
    return (*p || !bytes) ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFree(void *p) {
    free(p);
    return cudaSuccess;
}
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    (void)kind;
    if (bytes && (!dst || !src)) return cudaErrorInvalidValue;
    if (bytes) memmove(dst, src, bytes);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
    (void)stream;
    return cudaMemcpy(dst, src, bytes, kind);
}
cudaError_t cudaMemset(void *p, int value, size_t bytes) {
    if (bytes && !p) return cudaErrorInvalidValue;
    if (bytes) memset(p, value, bytes);
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t stream) {
    (void)stream;
    return cudaMemset(p, value, bytes);
}
cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
    (void)stream;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int *dev) {
    if (!dev) return cudaErrorInvalidValue;
    *dev = 0;
    return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int dev) {
    init();
    if (!value || dev != 0) return cudaErrorInvalidValue;
    switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = (int)SMEM_NO_OPT_IN; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrMultiProcessorCount: *value = 132; break;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = (int)S.smem_max; break;
    default: return cudaErrorInvalidValue;
    }
    return cudaSuccess;
}

cudaError_t cu_shim_func_set_attribute(const char *args_text, cudaFuncAttribute attr, int value) {
    init();
    /* the kernel is the text before the last two top-level arguments */
    const std::string t = args_text;
    std::vector<size_t> commas;
    int depth = 0;
    for (size_t i = 0; i < t.size(); i++) {
        const char c = t[i];
        if (c == '(' || c == '[' || c == '{') depth++;
        else if (c == ')' || c == ']' || c == '}') depth--;
        else if (c == ',' && depth == 0) commas.push_back(i);
    }
    if (commas.size() < 2) return cudaErrorInvalidValue;
    const std::string kern = norm_kernel(t.substr(0, commas[commas.size() - 2]));
    switch (attr) {
    case cudaFuncAttributeMaxDynamicSharedMemorySize:
        if (value < 0 || (size_t)value > S.smem_max) {
            S.last = cudaErrorInvalidValue;
            return cudaErrorInvalidValue;
        }
        for (auto &a : S.smem_attr)
            if (a.first == kern) {
                a.second = value;
                return cudaSuccess;
            }
        S.smem_attr.emplace_back(kern, value);
        return cudaSuccess;
    case cudaFuncAttributePreferredSharedMemoryCarveout:
        return (value >= -1 && value <= 100) ? cudaSuccess : cudaErrorInvalidValue;
    }
    return cudaErrorInvalidValue;
}

/* ---- orders ------------------------------------------------------------------------------ */

int cu_shim_n_orders(void) { return CU_SHIM_N_ORDERS; }
void cu_shim_set_order(int order) {
    init();
    if (order < 0 || order >= CU_SHIM_N_ORDERS) {
        fprintf(stderr, "cu_shim_set_order(%d): expected 0..%d\n", order, CU_SHIM_N_ORDERS - 1);
        abort();
    }
    S.order = order;
}
int cu_shim_get_order(void) {
    init();
    return S.order;
}
const char *cu_shim_order_name(int order) {
    switch (order) {
    case CU_SHIM_FORWARD: return "forward";
    case CU_SHIM_REVERSE: return "reverse";
    case CU_SHIM_RANDOM: return "random";
    default: return "?";
    }
}
void cu_shim_set_seed(unsigned long long seed) {
    init();
    S.seed = seed;
}
unsigned long long cu_shim_switches(void) { return S.switches; }
