// hal_host_runtime.h: fibers, barriers, lock-step shuffles and the launch entry of the
// hal host shim (see hal_host_shim.h). One copy per compiled shared object (hidden
// visibility): a launch runs the grid's blocks in order, each block's threads as fibers.
//
// Context switch: x86-64 System V, written for hal. It saves the callee-saved registers,
// MXCSR and the x87 control word on the old stack and restores them from the new one.
// Fiber stacks are mmap'd with a PROT_NONE guard page below them.
//
// Errors (a deadlocked barrier, a shuffle reading a lane that did not take part, a bad
// shuffle width, a fault from a guard page around a global buffer or a fiber stack) stop
// the launch; the entry returns non-zero and hal_host_last_error() says what and where.
#pragma once
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>


namespace hal_host {

struct dim3 {
  unsigned x, y, z;
};

extern "C" void hal_host_switch_(void** save_sp, void* new_sp);
__asm__(R"(
  .text
  .p2align 4
  .hidden hal_host_switch_
  .type hal_host_switch_,@function
hal_host_switch_:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size hal_host_switch_, .-hal_host_switch_
)");

enum ShuffleMode { SHFL_XOR, SHFL_DOWN, SHFL_UP, SHFL_IDX };

constexpr size_t kStackBytes = 128 * 1024;  // per thread; local arrays live here
constexpr int kMaxThreads = 1024;
constexpr int kWarp = HAL_WARP_SIZE;
static_assert((kWarp & (kWarp - 1)) == 0 && kWarp <= 64, "warp size: a power of two <= 64");

// cp.async copies one thread has issued and not yet completed (hal_host_matrix.h)
struct PendingCopy {
  void* dst;
  const void* src;
  unsigned group;
  int bytes;
  bool full;
};
constexpr int kMaxPending = 512;
struct CopyQueue {
  PendingCopy q[kMaxPending];
  int n = 0;
  unsigned committed = 0;
};

struct Fiber {
  void* sp = nullptr;
  CopyQueue* copies = nullptr;
  char* stack = nullptr;  // mapping base (guard page first)
  dim3 tid{0, 0, 0};
  int linear = 0;
  bool done = false;
  const char* where = "";  // what the fiber waits at, for deadlock reports
};

struct Warp {
  int live = 0, arrived = 0;
  unsigned gen = 0;
  uint64_t slot[kWarp];
  unsigned lane_gen[kWarp];  // generation in which each lane last deposited a value
};

struct Runtime {
  Fiber fibers[kMaxThreads];
  Warp warps[kMaxThreads / kWarp + 1];
  Fiber* cur = nullptr;
  void* sched_sp = nullptr;
  dim3 block_idx{0, 0, 0}, block_dim{1, 1, 1}, grid_dim{1, 1, 1};
  int nthreads = 0, live = 0, bar_arrived = 0;
  unsigned bar_gen = 0;
  unsigned long progress = 0;
  void (*body)(void*) = nullptr;
  void* body_arg = nullptr;
  bool aborted = false;
  char error[1024] = {0};
  sigjmp_buf fault_jmp;
  volatile sig_atomic_t in_launch = 0;
  char* stacks = nullptr;  // nthreads * (guard + stack), during a launch
};

inline Runtime g_rt;  // hidden: each shared object has its own

[[noreturn]] static void abort_launch();

__attribute__((format(printf, 1, 2))) static void fail(const char* fmt, ...) {
  Runtime& r = g_rt;
  if (!r.aborted) {
    int n = 0;
    if (r.cur) {
      n = snprintf(r.error, sizeof r.error, "block (%u,%u,%u) thread %d: ", r.block_idx.x,
                   r.block_idx.y, r.block_idx.z, r.cur->linear);
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r.error + n, sizeof r.error - n, fmt, ap);
    va_end(ap);
    r.aborted = true;
  }
  abort_launch();
}

// Back to the scheduler; the calling fiber runs again when the scheduler picks it.
static inline void yield() { hal_host_switch_(&g_rt.cur->sp, g_rt.sched_sp); }

[[noreturn]] static void abort_launch() {
  Runtime& r = g_rt;
  r.aborted = true;
  if (r.cur) hal_host_switch_(&r.cur->sp, r.sched_sp);  // never resumed
  __builtin_trap();
}

static inline void block_barrier() {
  Runtime& r = g_rt;
  unsigned g = r.bar_gen;
  r.progress++;
  if (++r.bar_arrived == r.live) {
    r.bar_arrived = 0;
    r.bar_gen++;
    return;
  }
  r.cur->where = "__syncthreads()";
  while (r.bar_gen == g) yield();
  r.cur->where = "";
}

static inline Warp& my_warp() { return g_rt.warps[g_rt.cur->linear / kWarp]; }

// All live lanes of the caller's warp arrive; returns the generation it completed.
static inline unsigned warp_arrive(const char* what) {
  Runtime& r = g_rt;
  Warp& w = my_warp();
  unsigned g = w.gen;
  r.progress++;
  if (++w.arrived == w.live) {
    w.arrived = 0;
    w.gen++;
    return g;
  }
  r.cur->where = what;
  while (w.gen == g) yield();
  r.cur->where = "";
  return g;
}

static inline void warp_sync() { warp_arrive("__syncwarp()"); }

template <typename T>
static inline T shuffle(T v, ShuffleMode mode, int b, int width, const char* name) {
  static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
  Runtime& r = g_rt;
  if (width <= 0 || width > kWarp || (width & (width - 1)))
    fail("%s: width %d is not a power of two <= the warp size %d", name, width, kWarp);
  const int lane = r.cur->linear % kWarp;
  const int base = lane & ~(width - 1), pos = lane & (width - 1);
  int j = lane;
  switch (mode) {  // PTX shfl.sync / HIP __shfl_*: a source outside the segment gives own value
    case SHFL_XOR: j = lane ^ b; if (j >= base + width || j < 0) j = lane; break;
    case SHFL_DOWN: j = pos + b < width ? lane + b : lane; break;
    case SHFL_UP: j = pos - b >= 0 ? lane - b : lane; break;
    case SHFL_IDX: j = base + (b & (width - 1)); break;
  }
  Warp& w = my_warp();
  uint64_t bits = 0;
  memcpy(&bits, &v, sizeof(T));
  w.slot[lane] = bits;
  w.lane_gen[lane] = w.gen;  // deposited in this generation
  unsigned g = warp_arrive(name);
  const int warp_base = r.cur->linear - lane;
  if (warp_base + j >= r.nthreads)
    fail("%s reads lane %d, which does not exist (block of %d threads, warp of %d)", name, j,
         r.nthreads, kWarp);
  if (w.lane_gen[j] != g || r.fibers[warp_base + j].done)
    fail("%s reads lane %d, which did not take part (diverged or exited)", name, j);
  uint64_t got = w.slot[j];
  warp_arrive(name);  // nobody overwrites a slot before every lane has read
  T out;
  memcpy(&out, &got, sizeof(T));
  return out;
}

static void fiber_entry() {
  Runtime& r = g_rt;
  Fiber* f = r.cur;
  r.body(r.body_arg);
  f->done = true;
  r.live--;
  r.progress++;
  // an exited thread no longer holds back its block's barrier or its warp
  if (r.bar_arrived > 0 && r.bar_arrived == r.live) {
    r.bar_arrived = 0;
    r.bar_gen++;
  }
  Warp& w = r.warps[f->linear / kWarp];
  w.live--;
  if (w.arrived > 0 && w.arrived == w.live) {
    w.arrived = 0;
    w.gen++;
  }
  hal_host_switch_(&f->sp, r.sched_sp);
  __builtin_trap();
}

static inline size_t page() { return (size_t)sysconf(_SC_PAGESIZE); }

// Stacks for one launch, mapped at its start and unmapped at its end (so that many loaded
// kernels do not pile up mappings): a PROT_NONE guard page below each stack.
static bool map_stacks(int nthreads) {
  Runtime& r = g_rt;
  size_t each = kStackBytes + page();
  void* p = mmap(nullptr, each * nthreads, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return false;
  r.stacks = (char*)p;
  for (int i = 0; i < nthreads; i++) mprotect(r.stacks + i * each, page(), PROT_NONE);
  return true;
}

static void unmap_stacks(int nthreads) {
  Runtime& r = g_rt;
  munmap(r.stacks, (kStackBytes + page()) * nthreads);
  r.stacks = nullptr;
}

static void init_fiber(Fiber& f, int i) {
  size_t each = kStackBytes + page();
  f.stack = g_rt.stacks + i * each;
  uintptr_t top = ((uintptr_t)(f.stack + each)) & ~(uintptr_t)15;
  uint64_t* s = (uint64_t*)top;
  *--s = 0;                                   // fake return address of fiber_entry
  *--s = (uint64_t)(uintptr_t)&fiber_entry;   // popped by `ret`
  for (int k = 0; k < 6; k++) *--s = 0;       // rbp rbx r12 r13 r14 r15
  --s;
  uint32_t mxcsr = 0x1f80;                    // default: all exceptions masked, RNE
  uint16_t fpcw = 0x037f;
  memcpy((char*)s, &mxcsr, 4);
  memcpy((char*)s + 4, &fpcw, 2);
  f.sp = s;
  f.done = false;
  if (f.copies) {
    f.copies->n = 0;
    f.copies->committed = 0;
  }
  f.where = "";
}

// Run one block to completion; false on an error (g_rt.error says which).
static bool run_block(int nthreads) {
  Runtime& r = g_rt;
  r.nthreads = r.live = nthreads;
  r.bar_arrived = 0;
  for (int w = 0; w * kWarp < nthreads; w++) {
    Warp& wp = r.warps[w];
    wp.arrived = 0;
    wp.live = nthreads - w * kWarp < kWarp ? nthreads - w * kWarp : kWarp;
    memset(wp.lane_gen, 0xff, sizeof wp.lane_gen);
  }
  for (int i = 0; i < nthreads; i++) {
    Fiber& f = r.fibers[i];
    init_fiber(f, i);
    f.linear = i;
    f.tid = dim3{(unsigned)i % r.block_dim.x, (unsigned)i / r.block_dim.x % r.block_dim.y,
                 (unsigned)i / (r.block_dim.x * r.block_dim.y)};
  }
  while (r.live > 0) {
    unsigned long before = r.progress;
    for (int i = 0; i < nthreads && !r.aborted; i++) {
      Fiber& f = r.fibers[i];
      if (f.done) continue;
      r.cur = &f;
      hal_host_switch_(&r.sched_sp, f.sp);
      r.cur = nullptr;
    }
    if (r.aborted) return false;
    if (r.live > 0 && r.progress == before) {
      int n = snprintf(r.error, sizeof r.error, "block (%u,%u,%u): deadlock, %d of %d threads "
                       "wait forever:", r.block_idx.x, r.block_idx.y, r.block_idx.z, r.live,
                       nthreads);
      int shown = 0;
      for (int i = 0; i < nthreads && shown < 6 && n < (int)sizeof r.error - 64; i++) {
        if (!r.fibers[i].done) {
          n += snprintf(r.error + n, sizeof r.error - n, " thread %d at %s;", i,
                        r.fibers[i].where);
          shown++;
        }
      }
      return false;
    }
  }
  return true;
}

// SIGSEGV / SIGBUS from a guard page: leave the fiber and report where.
static void on_fault(int sig, siginfo_t* info, void*) {
  Runtime& r = g_rt;
  if (!r.in_launch) { signal(sig, SIG_DFL); raise(sig); return; }
  snprintf(r.error, sizeof r.error, "memory fault at address %#llx (%s) in block (%u,%u,%u) "
           "thread %d", (unsigned long long)(uintptr_t)info->si_addr,
           sig == SIGSEGV ? "SIGSEGV" : "SIGBUS", r.block_idx.x, r.block_idx.y, r.block_idx.z,
           r.cur ? r.cur->linear : -1);
  r.aborted = true;
  siglongjmp(r.fault_jmp, 1);
}

struct LaunchConfig {
  unsigned grid[3];
  unsigned block[3];
  unsigned long long shared_bytes;
};

// Run body(arg) for every thread of every block of the grid. 0: ok, 1: error.
static int launch(const LaunchConfig* cfg, void (*body)(void*), void* arg) {
  Runtime& r = g_rt;
  int nthreads = (int)(cfg->block[0] * cfg->block[1] * cfg->block[2]);
  r.error[0] = 0;
  r.aborted = false;
  if (nthreads <= 0 || nthreads > kMaxThreads) {
    snprintf(r.error, sizeof r.error, "block of %d threads (1..%d allowed)", nthreads,
             kMaxThreads);
    return 1;
  }
  if (!map_stacks(nthreads)) {
    snprintf(r.error, sizeof r.error, "could not map fiber stacks");
    return 1;
  }
  r.body = body;
  r.body_arg = arg;
  r.block_dim = dim3{cfg->block[0], cfg->block[1], cfg->block[2]};
  r.grid_dim = dim3{cfg->grid[0], cfg->grid[1], cfg->grid[2]};
  static char altstack[64 * 1024];
  stack_t ss{}, old_ss{};
  ss.ss_sp = altstack;
  ss.ss_size = sizeof altstack;
  sigaltstack(&ss, &old_ss);
  struct sigaction sa{}, old_segv{}, old_bus{};
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &old_segv);
  sigaction(SIGBUS, &sa, &old_bus);
  int rc = 0;
  r.in_launch = 1;
  if (sigsetjmp(r.fault_jmp, 1) == 0) {
    for (unsigned z = 0; z < cfg->grid[2] && !rc; z++)
      for (unsigned y = 0; y < cfg->grid[1] && !rc; y++)
        for (unsigned x = 0; x < cfg->grid[0] && !rc; x++) {
          r.block_idx = dim3{x, y, z};
          if (!run_block(nthreads)) rc = 1;
        }
  } else {
    rc = 1;
  }
  r.in_launch = 0;
  r.cur = nullptr;
  sigaction(SIGSEGV, &old_segv, nullptr);
  sigaction(SIGBUS, &old_bus, nullptr);
  sigaltstack(&old_ss, nullptr);
  unmap_stacks(nthreads);
  return rc;
}

// index sequences and cv/ref stripping without <utility> / <type_traits> (compile time)
template <unsigned long... I> struct Seq {};
template <unsigned long N, unsigned long... I> struct MakeSeq : MakeSeq<N - 1, N - 1, I...> {};
template <unsigned long... I> struct MakeSeq<0, I...> { using type = Seq<I...>; };
template <typename T> struct Bare { using type = T; };
template <typename T> struct Bare<const T> { using type = T; };
template <typename T> struct Bare<T&> { using type = T; };

// Calls a kernel with the arguments of a cuLaunchKernel-style void*[]: args[i] points at
// the i-th parameter's bytes.
template <typename... A>
struct Invocation {
  void (*fn)(A...);
  void** args;
  template <unsigned long... I>
  void call(Seq<I...>) {
    fn(*static_cast<typename Bare<A>::type*>(args[I])...);
  }
  static void run(void* self) {
    static_cast<Invocation*>(self)->call(typename MakeSeq<sizeof...(A)>::type{});
  }
};

template <typename... A>
static int launch_kernel(void (*fn)(A...), void** args, const LaunchConfig* cfg) {
  Invocation<A...> inv{fn, args};
  return launch(cfg, &Invocation<A...>::run, &inv);
}

}  // namespace hal_host

extern "C" __attribute__((visibility("default"))) const char* hal_host_last_error() {
  return ::hal_host::g_rt.error;
}

// One entry per kernel, generated by hal after the rendered source:
//   int hal_host_launch_<name>(void** args, const hal_host::LaunchConfig* cfg)
#define HAL_HOST_ENTRY(name)                                                                 \
  extern "C" __attribute__((visibility("default"))) int hal_host_launch_##name(             \
      void** args, const ::hal_host::LaunchConfig* cfg) {                                    \
    return ::hal_host::launch_kernel(&name, args, cfg);                                      \
  }
