// Our own fake of a c10 current-stream library, written from the facts in shared/design/cuda-facts.md
// (Paddle compat semantics A/B/C as read from Paddle develop and PRs #78584, #78652, #78902; PyTorch's
// 16-byte layout), not from their code. One source, many libraries: the build flags pick
//   LAYOUT   16 (PyTorch: trivially copyable, in registers), 24 / 32 (trivially copyable, in memory),
//            48 (Device holds a std::string: not trivially copyable, passed by invisible reference)
//   SEM_A    per-thread c10 stream, default stream (id 0) when unset; Paddle's stream untouched
//   SEM_B    get returns the framework (GPUContext) stream; set moves it, for every thread
//   SEM_C    per-thread optional, else default (id 0); set ALSO moves the framework stream, through
//            GPUContext::SetCUDAStream(stream, clear=true) (PR #78902): the first such set deletes the
//            stream the context still owns. UNSET_FOLLOWS: the PR #78902 revision whose get falls back to
//            the framework stream on a thread that never set its own
// plus faults for the tests: XOR_ID (id kept encoded), CHECK_DEVICE, ALWAYS_CRASH, SET_IGNORED,
// GET_WRONG_DEVICE (getCurrentCUDAStream's object names the next device, so restoring it misses).
// The framework's current stream per device is simulated here and exposed through extern "C" side doors,
// with Paddle's ownership rules (paddle/phi/backends/gpu/gpu_context.cc at 55307bdc: the context creates
// and owns its first stream, stream_owned_ = true; SetCUDAStream(s, clear) deletes the owned stream when
// clear is true, and always drops ownership; paddle/phi/core/cuda_stream.h at 9e4aa944: ~CUDAStream calls
// cudaStreamDestroy on a stream it created). Paddle's own Python switch (core._set_current_stream,
// paddle/fluid/pybind/cuda_streams_py.cc at 7156cb65) passes clear=false; so does semantics B's c10 set
// (compat c10/cuda/CUDAStream.cpp at 1322ea65). Destroyed streams are recorded, and so is every later use
// of one: a set to it (c10 or framework, restores included) or a launch on it.
#include <csignal>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <string>
#include <type_traits>

struct CUstream_st;
namespace c10 {
#if LAYOUT == 48
struct Device { int8_t type; int8_t index; std::string custom_device_type; };
static int8_t index_of(const Device& d) { return d.index; }
static void set_index(Device& d, int8_t i) { d.type = 1; d.index = i; }
#elif LAYOUT == 32
struct Place { int32_t alloc_type; int8_t device; int64_t reserved; };  // 16 bytes
struct Device { Place place; bool has_index; };
static int8_t index_of(const Device& d) { return d.place.device; }
static void set_index(Device& d, int8_t i) { d.place.alloc_type = 2; d.place.device = i; d.has_index = true; }
#elif LAYOUT == 24
struct Place { int32_t alloc_type; int32_t device; };  // 8 bytes
struct Device { Place place; bool has_index; };
static int8_t index_of(const Device& d) { return static_cast<int8_t>(d.place.device); }
static void set_index(Device& d, int8_t i) { d.place.alloc_type = 2; d.place.device = i; d.has_index = true; }
#elif LAYOUT == 16
struct Device { int8_t type; int8_t index; };
static int8_t index_of(const Device& d) { return d.index; }
static void set_index(Device& d, int8_t i) { d.type = 1; d.index = i; }
#else
#error "LAYOUT must be 16, 24, 32 or 48"
#endif
struct Stream { Device device; int64_t id; };
namespace cuda {
struct CUDAStream { Stream stream; };
static_assert(sizeof(CUDAStream) == LAYOUT, "layout size");
static_assert(offsetof(c10::Stream, id) == LAYOUT - 8, "the id is the last member");
static_assert(std::is_trivially_copyable<CUDAStream>::value == (LAYOUT != 48), "copyability");

#ifdef XOR_ID
static const int64_t kEncode = 0x0F0F0F0F0F0F0F0FLL;  // no sentinel ever shows
#else
static const int64_t kEncode = 0;
#endif
static int slot(int device) { return device < 0 || device >= 8 ? 0 : device; }

// The framework's (Paddle's GPUContext) current stream per device: one per process, never 0 at start.
static const int64_t kFrameworkStart[8] = {0x5000, 0x5100, 0x5200, 0x5300, 0x5400, 0x5500, 0x5600, 0x5700};
static int64_t framework[8];
static bool framework_owns[8];  // GPUContext::stream_owned_
static bool framework_nulled = false;
static const int kMaxDestroyed = 64;
static int64_t destroyed[kMaxDestroyed];
static int destroyed_count = 0;
static int destroyed_uses = 0;  // sets to, restores to and launches on a destroyed stream

static void reset_framework() {
  for (int d = 0; d < 8; ++d) {
    framework[d] = kFrameworkStart[d];
    framework_owns[d] = true;
  }
  framework_nulled = false;
  destroyed_count = destroyed_uses = 0;
}
static const bool framework_initialised = (reset_framework(), true);

static void use(int64_t id) {
  for (int i = 0; i < destroyed_count; ++i) {
    if (destroyed[i] == id) ++destroyed_uses;
  }
}
static void move_framework(int device, int64_t id) {
  framework[slot(device)] = id;
  if (id == 0) framework_nulled = true;  // GPUContext::stream() would now fail its null check
}
// GPUContext::SetCUDAStream(stream, clear): `if (clear && stream_owned_ && stream_) delete stream_;`
// then stream_owned_ = false; deleting the owned CUDAStream destroys its CUDA stream.
static void framework_set_cuda_stream(int device, int64_t id, bool clear) {
  int d = slot(device);
  if (clear && framework_owns[d] && destroyed_count < kMaxDestroyed) destroyed[destroyed_count++] = framework[d];
  framework_owns[d] = false;
  move_framework(d, id);
  use(id);
}
#if defined(SEM_A) || defined(SEM_C)
static thread_local int64_t current[8];   // 0: unset, the default stream
static thread_local bool is_set[8];
#endif

static CUDAStream make(int device, int64_t id) {
  CUDAStream s{};
  set_index(s.stream.device, static_cast<int8_t>(slot(device)));
  s.stream.id = id ^ kEncode;
  return s;
}
static int64_t c10_current(int device) {
#if defined(SEM_B)
  return framework[slot(device)];
#elif defined(UNSET_FOLLOWS)
  return is_set[slot(device)] ? current[slot(device)] : framework[slot(device)];
#else
  return is_set[slot(device)] ? current[slot(device)] : 0;
#endif
}

CUDAStream getStreamFromExternal(CUstream_st* ext, signed char device) {
  if (const char* marker = std::getenv("FAKE_C10_CWD_MARKER")) {  // a file written relative to the cwd (think core dumps)
    if (FILE* f = std::fopen(marker, "w")) std::fclose(f);
  }
#ifdef ALWAYS_CRASH
  std::raise(SIGSEGV);
#endif
#ifdef CHECK_DEVICE
  if (device < -1 || device >= 8) std::raise(SIGSEGV);  // like indexing a per-device array unchecked
#endif
  return make(device, reinterpret_cast<int64_t>(ext));
}
CUDAStream getCurrentCUDAStream(signed char device) {
#ifdef GET_WRONG_DEVICE
  return make(slot(device) + 1, c10_current(device));
#else
  return make(device, c10_current(device));
#endif
}
void setCurrentCUDAStream(CUDAStream s) {
#ifndef SET_IGNORED
  int device = slot(index_of(s.stream.device));
  int64_t id = s.stream.id ^ kEncode;
#if defined(SEM_A) || defined(SEM_C)
  current[device] = id;
  is_set[device] = true;
#endif
#if defined(SEM_B)
  framework_set_cuda_stream(device, id, /*clear=*/false);
#elif defined(SEM_C)
  framework_set_cuda_stream(device, id, /*clear=*/true);
#else
  use(id);
#endif
#endif
}
}  // namespace cuda
}  // namespace c10

// Side doors for the `fake` framework adapter and the tests (never used by the bridge itself).
extern "C" int64_t fake_c10_current_id(signed char device) { return c10::cuda::c10_current(device); }
extern "C" int64_t fake_framework_stream(signed char device) { return c10::cuda::framework[c10::cuda::slot(device)]; }
// Paddle's own switch (paddle.device.set_stream -> SetCUDAStream(stream, clear=false)).
extern "C" void fake_set_framework_stream(signed char device, int64_t id) {
  c10::cuda::framework_set_cuda_stream(device, id, /*clear=*/false);
}
extern "C" int fake_framework_was_nulled() { return c10::cuda::framework_nulled; }
extern "C" int fake_framework_owns_its_stream(signed char device) { return c10::cuda::framework_owns[c10::cuda::slot(device)]; }
extern "C" int fake_destroyed_count() { return c10::cuda::destroyed_count; }
extern "C" int64_t fake_destroyed(int i) { return i >= 0 && i < c10::cuda::destroyed_count ? c10::cuda::destroyed[i] : 0; }
extern "C" int fake_destroyed_uses() { return c10::cuda::destroyed_uses; }
// A torch-API extension kernel (DeepEP) launched on c10's current stream; a framework kernel on the framework's.
extern "C" void fake_launch_extension(signed char device) { c10::cuda::use(c10::cuda::c10_current(device)); }
extern "C" void fake_launch_framework(signed char device) { c10::cuda::use(c10::cuda::framework[c10::cuda::slot(device)]); }
// Back to a fresh process's framework state (c10's per-thread state is left to the threads).
extern "C" void fake_reset() { c10::cuda::reset_framework(); }
