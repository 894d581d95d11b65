// The LSTM layer's time loop on CPU as XLA FFI handlers, for charlstm.lstm.cpu_kernel: training's forward
// and backward passes, and inference's forward pass, which keeps no gates.
//
// Same mathematics as charlstm.lstm.cell (gates i, f, g, o; sigmoid(x) = (1 + tanh(x/2)) / 2, so the
// saved "gates" are the tanh of the scaled pre-activations), in float32, time-major. Each step is one
// matmul (StepMatmul) plus one vectorised pass over the gates, with no per-step dispatch; a large enough batch
// is split into blocks of rows, up to one per core, each running its whole time loop on a thread of XLA's
// intra-op pool or the calling thread.
// On a 2-core CPU this is what XLA's loop of small fused kernels could not reach (docs/speed.md).
#include <cblas.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// Handlers take XLA's intra-op thread pool as a parameter (their bindings are deduced from their signatures).
template <>
struct xla::ffi::CtxBinding<ffi::ThreadPool> {
  using Ctx = ffi::ThreadPool;
};

namespace {

// The element-wise loops (csrc/lstm_loops.inc) are compiled once per x86-64 level: AVX-512, AVX2 with FMA,
// and the baseline. The kernel runs the best this CPU has, or the one that charlstm.lstm.cpu_kernel asks for
// (CHARLSTM_CPU_ISA), so a build from one machine runs on any other (a -march=native build would crash with
// an illegal instruction on an older CPU) and each copy can be tested where it runs. GCC 11 cannot compile
// by level, so there the AVX2 copy goes without FMA. Other compilers and architectures: one copy, as built.
namespace baseline {
#include "lstm_loops.inc"
}  // namespace baseline
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CHARLSTM_X86_LEVELS
// What __builtin_cpu_supports asks of the CPU for each copy: the level the pragmas below compile it for.
#if __GNUC__ >= 12
#define CHARLSTM_AVX2_LEVEL "x86-64-v3"
#define CHARLSTM_AVX512_LEVEL "x86-64-v4"
#else
#define CHARLSTM_AVX2_LEVEL "avx2"
#define CHARLSTM_AVX512_LEVEL "avx512f"
#endif
#pragma GCC push_options
#if __GNUC__ >= 12
#pragma GCC target("arch=x86-64-v3")
#else
#pragma GCC target("avx2")
#endif
namespace avx2 {
#include "lstm_loops.inc"
}  // namespace avx2
#pragma GCC pop_options
#pragma GCC push_options
#if __GNUC__ >= 12
#pragma GCC target("arch=x86-64-v4")
#else
#pragma GCC target("avx512f")
#endif
namespace avx512 {
#include "lstm_loops.inc"

// One tile of z = h @ w: `Rows` rows of h (row stride k) against 64 columns of w (row stride w_stride), 4 * Rows
// accumulators over the k rows of w.
template <int Rows>
[[gnu::always_inline]] inline void MatmulTile(int64_t k, const float* h, const float* w, int64_t w_stride, float* z,
                                              int64_t z_stride) {
  __m512 acc[Rows][4];
  for (auto& row : acc)
    for (auto& part : row) part = _mm512_setzero_ps();
  for (int64_t j = 0; j < k; ++j) {
    const float* w_j = w + j * w_stride;
    const __m512 w0 = _mm512_loadu_ps(w_j), w1 = _mm512_loadu_ps(w_j + 16), w2 = _mm512_loadu_ps(w_j + 32),
                 w3 = _mm512_loadu_ps(w_j + 48);
    for (int i = 0; i < Rows; ++i) {
      const __m512 a = _mm512_set1_ps(h[i * k + j]);
      acc[i][0] = _mm512_fmadd_ps(a, w0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(a, w1, acc[i][1]);
      acc[i][2] = _mm512_fmadd_ps(a, w2, acc[i][2]);
      acc[i][3] = _mm512_fmadd_ps(a, w3, acc[i][3]);
    }
  }
  for (int i = 0; i < Rows; ++i)
    for (int part = 0; part < 4; ++part) _mm512_storeu_ps(z + i * z_stride + 16 * part, acc[i][part]);
}

// z [rows, n] = h [rows, k] @ w for n a multiple of 64, in groups of 64 columns: group g's k rows of 64 start at
// w + g * group_stride, w_stride apart (packed by StepMatmul: k * 64 and 64; as given: 64 and n). Each group
// stays in cache while every 4 rows of h pass over it.
void TiledMatmul(int64_t rows, int64_t k, int64_t n, const float* h, const float* w, int64_t group_stride,
                 int64_t w_stride, float* z) {
  for (int64_t group = 0; group < n / 64; ++group) {
    const float* w_group = w + group * group_stride;
    float* z_group = z + group * 64;
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) MatmulTile<4>(k, h + r * k, w_group, w_stride, z_group + r * n, n);
    switch (rows - r) {
      case 3: MatmulTile<3>(k, h + r * k, w_group, w_stride, z_group + r * n, n); break;
      case 2: MatmulTile<2>(k, h + r * k, w_group, w_stride, z_group + r * n, n); break;
      case 1: MatmulTile<1>(k, h + r * k, w_group, w_stride, z_group + r * n, n); break;
    }
  }
}
}  // namespace avx512
#pragma GCC pop_options
#endif

// One compiled copy of the loops, by the name CHARLSTM_CPU_ISA gives it.
struct Loops {
  const char* name;
  bool (*runs_here)();
  decltype(&baseline::AddTo) add_to;
  decltype(&baseline::step_forward) step_forward;
  decltype(&baseline::step_backward) step_backward;
  decltype(&baseline::RowsMatmul) rows_matmul;
  decltype(&baseline::DrawRow) draw_row;
  decltype(&baseline::SumFloats) sum_floats;
  // The per-step matmul in groups of 64 columns (StepMatmul); null: OpenBLAS's sgemm, which packs its operands
  // on every call.
  void (*tiled_matmul)(int64_t rows, int64_t k, int64_t n, const float* h, const float* w, int64_t group_stride,
                       int64_t w_stride, float* z);
};

// The copies, best first.
constexpr Loops kLoops[] = {
#ifdef CHARLSTM_X86_LEVELS
    {"avx512", [] { return __builtin_cpu_supports(CHARLSTM_AVX512_LEVEL) > 0; }, avx512::AddTo, avx512::step_forward,
     avx512::step_backward, avx512::RowsMatmul, avx512::DrawRow, avx512::SumFloats, avx512::TiledMatmul},
    {"avx2", [] { return __builtin_cpu_supports(CHARLSTM_AVX2_LEVEL) > 0; }, avx2::AddTo, avx2::step_forward,
     avx2::step_backward, avx2::RowsMatmul, avx2::DrawRow, avx2::SumFloats, nullptr},
#endif
    {"baseline", [] { return true; }, baseline::AddTo, baseline::step_forward, baseline::step_backward,
     baseline::RowsMatmul, baseline::DrawRow, baseline::SumFloats, nullptr},
};

// The copy the handlers call: the best this CPU runs until CharlstmUseLoops picks another.
const Loops* loops = [] {
  for (const auto& candidate : kLoops)
    if (candidate.runs_here()) return &candidate;
  return &kLoops[std::size(kLoops) - 1];
}();

// OpenBLAS's functions, handed over by charlstm.lstm.cpu_kernel (CharlstmUseOpenblas) from the
// scipy-openblas32 library it loads privately: loaded globally instead, it would also serve (and set the
// threading of) other OpenBLAS users in the process, as SciPy's copy exports the same names.
struct Openblas {
  decltype(&scipy_cblas_sgemm) sgemm = nullptr;
  decltype(&scipy_openblas_get_num_threads) get_num_threads = nullptr;
  decltype(&scipy_openblas_set_num_threads) set_num_threads = nullptr;
} openblas;

// C[m, n] = alpha * op(A) @ op(B) + beta * C, row-major.
inline void sgemm(bool trans_a, bool trans_b, int m, int n, int k, const float* a, int lda, const float* b, int ldb,
                  float beta, float* c, int ldc) {
  openblas.sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k,
                 1.0f, a, lda, b, ldb, beta, c, ldc);
}

// A time step's matmul z [rows, n] = h [rows, k] @ w for a w [k, n] (row-major) fixed over the call: the
// recurrent kernel forward, its transpose back. With loops that have a tiled matmul and n a multiple of 64, the
// kernel's own 4 x 64 tiles; w is packed once, 64 columns at a time, when the call has at least kPackSteps steps
// (a one-step call, as sampling makes, reads it in place). Otherwise each step is an OpenBLAS sgemm, which
// packs w again on every call (12% of the headline train step, docs/speed.md).
class StepMatmul {
 public:
  static constexpr int64_t kPackSteps = 4;
  StepMatmul(const float* w, int64_t k, int64_t n, int64_t steps)
      : w_(w), k_(k), n_(n), matmul_(n % 64 == 0 ? loops->tiled_matmul : nullptr) {
    if (matmul_ == nullptr || steps < kPackSteps) return;
    packed_.resize(k * n);
    for (int64_t group = 0; group < n / 64; ++group)
      for (int64_t j = 0; j < k; ++j)
        std::memcpy(&packed_[(group * k + j) * 64], w + j * n + group * 64, 64 * sizeof(float));
  }
  void operator()(int64_t rows, const float* h, float* z) const {
    if (matmul_ == nullptr)
      sgemm(false, false, rows, n_, k_, h, k_, w_, n_, 0.0f, z, n_);
    else if (packed_.empty())
      matmul_(rows, k_, n_, h, w_, 64, n_, z);
    else
      matmul_(rows, k_, n_, h, packed_.data(), k_ * 64, 64, z);
  }

 private:
  const float* w_;
  int64_t k_, n_;
  decltype(Loops::tiled_matmul) matmul_;
  std::vector<float> packed_;
};

// Threads for the kernel's loops: OpenBLAS's own count (the cores, or fewer with OPENBLAS_NUM_THREADS),
// read once. From then on OpenBLAS runs single-threaded inside each of them.
int KernelThreads() {
  static const int threads = [] {
    const int count = openblas.get_num_threads();
    openblas.set_num_threads(1);
    return std::max(count, 1);
  }();
  return threads;
}

// How many blocks to split the batch's rows over: each at least 16 rows and 512 row-steps of work. A hand-off
// to another thread costs microseconds, and more inside a loop of small XLA kernels whose threads it wakes:
// one-step calls stay on the calling thread.
int64_t RowBlocks(int64_t batch, int64_t time) {
  return std::clamp<int64_t>(std::min(batch / 16, batch * time / 512), 1, KernelThreads());
}

// How many threads to split the recurrent-weight gradient's 4*units columns over: 64 columns each at least.
int64_t ColumnBlocks(int64_t width) { return std::clamp<int64_t>(width / 64, 1, KernelThreads()); }

// Blocks of work for ParallelBlocks, claimed one at a time by whichever thread asks next.
struct BlockClaims {
  int64_t blocks;
  std::function<void(int64_t)> run_block;
  std::atomic<int64_t> next{0}, finished{0};
  void Claim() {
    for (int64_t k = next++; k < blocks; k = next++) {
      run_block(k);
      ++finished;
    }
  }
};

// Splits [0, count) into `blocks` contiguous blocks and runs work(block, first, size) for each
// concurrently: the calling thread and XLA's intra-op threads (no thread starts per call) claim blocks in
// turn, and the caller runs any block no other thread has claimed, so a busy pool delays but never blocks it.
// The LSTM's batch rows are independent through time, so each block runs its rows' whole time loop without
// waiting for the others. An exception in any block is rethrown here once all have finished.
template <typename Work>
void ParallelBlocks(ffi::ThreadPool& pool, int64_t blocks, int64_t count, const Work& work) {
  std::vector<std::exception_ptr> errors(blocks);
  // Shared with the pool's tasks, which may start after this call has returned: they then find no block left.
  const auto claims = std::make_shared<BlockClaims>();
  claims->blocks = blocks;
  claims->run_block = [&](int64_t k) {
    try {
      const int64_t first = count * k / blocks;
      work(k, first, count * (k + 1) / blocks - first);
    } catch (...) {
      errors[k] = std::current_exception();
    }
  };
  try {
    for (int64_t k = 1; k < blocks; ++k) pool.Schedule([claims] { claims->Claim(); });
  } catch (...) {  // No task to be had (out of memory): this thread claims what is left.
  }
  claims->Claim();
  while (claims->finished < blocks) std::this_thread::yield();
  for (const auto& error : errors)
    if (error) std::rethrow_exception(error);
}

// Runs a handler's body, turning any C++ exception (out of memory) into an XLA error: none may cross
// into XLA.
template <typename Body>
ffi::Error Guarded(const Body& body) {
  try {
    return body();
  } catch (const std::exception& error) {
    return ffi::Error::Internal(std::string("charlstm LSTM kernel: ") + error.what());
  }
}

// A table row for a character id, clamped into [0, vocab) so that no id reads or writes outside the
// table (jnp indexing would wrap a negative id instead; the data's ids are always in range).
template <typename Float>
Float* TableRow(Float* table, int64_t vocab, int64_t width, int32_t id) {
  return table + std::clamp<int64_t>(id, 0, vocab - 1) * width;
}

bool HasShape(ffi::Span<const int64_t> dims, std::initializer_list<int64_t> shape) {
  return std::equal(dims.begin(), dims.end(), shape.begin(), shape.end());
}

// An error for a handler called before charlstm.lstm.cpu_kernel handed OpenBLAS over, else success.
ffi::Error CheckOpenblas() {
  if (openblas.sgemm != nullptr) return ffi::Error::Success();
  return ffi::Error::Internal(
      "charlstm LSTM kernel: OpenBLAS was not handed over (CharlstmUseOpenblas): load the kernel through "
      "charlstm.lstm.cpu_kernel");
}

// The inputs' shapes for `time` steps of `batch` rows: kernel [units, 4*units], h0 and c0 [batch, units],
// and either x_proj [time, batch, 4*units] (ids empty) or a table [vocab, 4*units] with ids [time, batch];
// time * batch must fit OpenBLAS's int.
ffi::Error CheckShapes(ffi::Span<const int64_t> kernel, ffi::Span<const int64_t> h0, ffi::Span<const int64_t> c0,
                       ffi::Span<const int64_t> x, ffi::Span<const int64_t> ids, size_t id_count, int64_t time,
                       int64_t batch) {
  if (auto error = CheckOpenblas(); error.failure()) return error;
  const int64_t units = kernel.size() == 2 ? kernel[0] : 0, width = 4 * units;
  const bool valid = units > 0 && HasShape(kernel, {units, width}) && time > 0 && batch > 0 &&
                     time * batch <= std::numeric_limits<int>::max() && HasShape(h0, {batch, units}) &&
                     HasShape(c0, {batch, units}) &&
                     (id_count > 0 ? x.size() == 2 && x[0] > 0 && HasShape(x, {x[0], width}) &&
                                         HasShape(ids, {time, batch})
                                   : HasShape(x, {time, batch, width}));
  if (!valid)
    return ffi::Error::InvalidArgument(
        "lstm: expected kernel [units, 4*units], h0 and c0 [batch, units], and x_proj [time, batch, 4*units] or a "
        "table [vocab, 4*units] with ids [time, batch]");
  return ffi::Error::Success();
}

// Points x_rows at step t's input projections for rows [first, first + rows): with ids, the table's rows
// for their character ids (the first layer's input projection, never written out whole), else x_proj's.
void PointAtInputs(ffi::Buffer<ffi::F32>& x, ffi::Buffer<ffi::S32>& ids, int64_t t, int64_t batch, int64_t first,
                   int64_t width, std::vector<const float*>& x_rows) {
  const bool gather = ids.element_count() > 0;
  for (size_t b = 0; b < x_rows.size(); ++b) {
    const int64_t position = t * batch + first + b;
    x_rows[b] = gather ? TableRow(x.typed_data(), x.dimensions()[0], width, ids.typed_data()[position])
                       : x.typed_data() + position * width;
  }
}

// Where the forward pass writes: each step's h into hs [time, batch, units]; for training also each
// step's c and gates' tanh into cs [time, batch, units] and gates [time, batch, 4*units], for the
// backward pass. Without them (inference) a step's gates and c live in small per-thread buffers and
// only the last c is written, to c_last [batch, units].
struct ForwardOutputs {
  float* hs;
  float* cs;
  float* gates;
  float* c_last;
};

ffi::Error Forward(ffi::ThreadPool& pool, ffi::Buffer<ffi::F32>& kernel, ffi::Buffer<ffi::F32>& h0, ffi::Buffer<ffi::F32>& c0,
                   ffi::Buffer<ffi::F32>& x, ffi::Buffer<ffi::S32>& ids, ffi::Span<const int64_t> hs_dims,
                   ForwardOutputs out) {
  const int64_t time = hs_dims[0], batch = hs_dims[1], units = hs_dims[2], width = 4 * units;
  if (auto error = CheckShapes(kernel.dimensions(), h0.dimensions(), c0.dimensions(), x.dimensions(),
                               ids.dimensions(), ids.element_count(), time, batch);
      error.failure())
    return error;
  const size_t step_h = batch * units, step_z = 4 * step_h;
  const bool save = out.gates != nullptr;
  return Guarded([&] {
    const StepMatmul recurrent(kernel.typed_data(), units, width, time);
    ParallelBlocks(pool, RowBlocks(batch, time), batch, [&](int64_t, int64_t first, int64_t rows) {
      std::vector<float> scratch(save ? 0 : rows * (width + 2 * units));  // One step's gates, two steps' c.
      std::vector<const float*> x_rows(rows);
      const float *h_prev = h0.typed_data() + first * units, *c_prev = c0.typed_data() + first * units;
      for (int64_t t = 0; t < time; ++t) {
        const size_t h_t = t * step_h + first * units;
        float* z_t = save ? out.gates + t * step_z + first * width : scratch.data();
        float* c_t = save ? out.cs + h_t : scratch.data() + rows * (width + (t % 2) * units);
        PointAtInputs(x, ids, t, batch, first, width, x_rows);
        recurrent(rows, h_prev, z_t);
        loops->step_forward(rows, units, z_t, x_rows.data(), c_prev, c_t, out.hs + h_t);
        h_prev = out.hs + h_t;
        c_prev = c_t;
      }
      if (!save) std::memcpy(out.c_last + first * units, c_prev, sizeof(float) * rows * units);
    });
    return ffi::Error::Success();
  });
}

// Training's forward pass: hs, cs and gates for every step.
ffi::Error LstmForwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> kernel, ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> c0,
                           ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S32> ids, ffi::ResultBuffer<ffi::F32> hs,
                           ffi::ResultBuffer<ffi::F32> cs, ffi::ResultBuffer<ffi::F32> gates) {
  return Forward(pool, kernel, h0, c0, x, ids, hs->dimensions(),
                 {hs->typed_data(), cs->typed_data(), gates->typed_data(), nullptr});
}

// Inference's forward pass (evaluation, sampling): hs for every step and the last c only.
ffi::Error LstmInferenceImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> kernel, ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> c0,
                             ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S32> ids, ffi::ResultBuffer<ffi::F32> hs,
                             ffi::ResultBuffer<ffi::F32> c_last) {
  return Forward(pool, kernel, h0, c0, x, ids, hs->dimensions(), {hs->typed_data(), nullptr, nullptr, c_last->typed_data()});
}

// Backward over time from the forward's hs, cs and gates. dz enters holding the gates (aliased) and
// leaves holding the gradient of x_proj; with ids, d_table [vocab, 4*units] gets those rows summed by
// id (one partial table per thread, added in order, so the sums are the same every run). dh0 and dc0
// carry (dh, dc) back through time and end as the gradient of the initial state; d_kernel is one
// sgemm over all steps at the end.
ffi::Error LstmBackwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> kernel, ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> c0,
                            ffi::Buffer<ffi::F32> hs, ffi::Buffer<ffi::F32> cs, ffi::Buffer<ffi::F32> gates,
                            ffi::Buffer<ffi::F32> d_hs, ffi::Buffer<ffi::F32> d_h, ffi::Buffer<ffi::F32> d_c,
                            ffi::Buffer<ffi::S32> ids, ffi::ResultBuffer<ffi::F32> dz,
                            ffi::ResultBuffer<ffi::F32> d_table, ffi::ResultBuffer<ffi::F32> d_kernel,
                            ffi::ResultBuffer<ffi::F32> dh0, ffi::ResultBuffer<ffi::F32> dc0) {
  const auto dims = hs.dimensions();
  if (dims.size() != 3 || kernel.dimensions().size() != 2)
    return ffi::Error::InvalidArgument("lstm backward: expected hs [time, batch, units] and kernel [units, 4*units]");
  const int64_t time = dims[0], batch = dims[1], units = kernel.dimensions()[0], width = 4 * units;
  const bool gather = ids.element_count() > 0;
  if (auto error = CheckShapes(kernel.dimensions(), h0.dimensions(), c0.dimensions(),
                               gather ? d_table->dimensions() : gates.dimensions(), ids.dimensions(),
                               ids.element_count(), time, batch);
      error.failure())
    return error;
  if (!(HasShape(dims, {time, batch, units}) && HasShape(cs.dimensions(), {time, batch, units}) &&
        HasShape(d_hs.dimensions(), {time, batch, units}) && HasShape(gates.dimensions(), {time, batch, width}) &&
        HasShape(d_h.dimensions(), {batch, units}) && HasShape(d_c.dimensions(), {batch, units})))
    return ffi::Error::InvalidArgument("lstm backward: hs, cs, gates and the cotangents must match the forward's");
  const int64_t vocab = gather ? d_table->dimensions()[0] : 0;
  const size_t step_h = batch * units, step_z = 4 * step_h;
  return Guarded([&] {
    float* z = dz->typed_data();
    if (z != gates.typed_data()) std::memcpy(z, gates.typed_data(), sizeof(float) * time * step_z);
    float *dh = dh0->typed_data(), *dc = dc0->typed_data();
    std::memcpy(dh, d_h.typed_data(), sizeof(float) * step_h);
    std::memcpy(dc, d_c.typed_data(), sizeof(float) * step_h);
    const float *c = cs.typed_data(), *dh_out = d_hs.typed_data();
    std::vector<float> kernel_t(units * width);  // [4*units, units]: a plain (untransposed) matmul is faster.
    for (int64_t i = 0; i < units; ++i)
      for (int64_t j = 0; j < width; ++j) kernel_t[j * units + i] = kernel.typed_data()[i * width + j];
    const StepMatmul recurrent_back(kernel_t.data(), width, units, time);
    const int64_t row_blocks = RowBlocks(batch, time);
    std::vector<float> partial_tables(row_blocks * vocab * width, 0.0f);
    ParallelBlocks(pool, row_blocks, batch, [&](int64_t block, int64_t first, int64_t rows) {
      float *dh_rows = dh + first * units, *dc_rows = dc + first * units;
      float* table = partial_tables.data() + block * vocab * width;
      for (int64_t t = time - 1; t >= 0; --t) {
        const size_t h_t = t * step_h + first * units;
        loops->add_to(rows * units, dh_out + h_t, dh_rows);
        const float* c_prev = t ? c + h_t - step_h : c0.typed_data() + first * units;
        float* z_t = z + t * step_z + first * width;
        loops->step_backward(rows, units, z_t, c + h_t, c_prev, dh_rows, dc_rows);
        for (int64_t b = 0; gather && b < rows; ++b) {
          const int32_t id = ids.typed_data()[t * batch + first + b];
          loops->add_to(width, z_t + b * width, TableRow(table, vocab, width, id));
        }
        recurrent_back(rows, z_t, dh_rows);
      }
    });
    if (gather) {
      std::fill_n(d_table->typed_data(), vocab * width, 0.0f);
      for (size_t k = 0; k < partial_tables.size(); k += vocab * width)
        loops->add_to(vocab * width, partial_tables.data() + k, d_table->typed_data());
    }
    // d_kernel = h0^T dz[0] + hs[:-1]^T dz[1:]: [units, batch] @ [batch, 4*units], then one large sgemm,
    // each thread taking a block of d_kernel's columns.
    float* dk = d_kernel->typed_data();
    ParallelBlocks(pool, ColumnBlocks(width), width, [&](int64_t, int64_t first, int64_t columns) {
      sgemm(true, false, units, columns, batch, h0.typed_data(), units, z + first, width, 0.0f, dk + first, width);
      if (time > 1)
        sgemm(true, false, units, columns, (time - 1) * batch, hs.typed_data(), units, z + step_z + first, width,
              1.0f, dk + first, width);
    });
    return ffi::Error::Success();
  });
}


// Sampling's loop (charlstm.sampling.sample_chunk without top-k or top-p): `steps` characters per row, each
// drawn from the row's logits with its uniform number (DrawRow), then fed through every LSTM layer and the
// head for the next logits. One call runs the whole chunk: no per-step dispatch, and a large enough batch's
// rows split into blocks (RowBlocks), each running its whole loop on one thread.
//   table [vocab, 4*units]: the first layer's input projection of each character, bias included;
//   recurrent [layers, units, 4*units]; inputs [layers - 1, units, 4*units] and biases [layers - 1, 4*units]:
//   the other layers' input kernels and biases; head_kernel [units, vocab], head_bias [vocab];
//   state [layers, 2, rows, units]: each layer's h and c; logits [rows, vocab]; uniforms [rows, steps];
//   temperatures [rows] (0: greedy).
// Results: ids, model_log_probs and sampling_log_probs [rows, steps]; the state and logits after the last step.
ffi::Error LstmSampleImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> table, ffi::Buffer<ffi::F32> recurrent,
                          ffi::Buffer<ffi::F32> inputs, ffi::Buffer<ffi::F32> biases, ffi::Buffer<ffi::F32> head_kernel,
                          ffi::Buffer<ffi::F32> head_bias, ffi::Buffer<ffi::F32> state, ffi::Buffer<ffi::F32> logits,
                          ffi::Buffer<ffi::F32> uniforms, ffi::Buffer<ffi::F32> temperatures,
                          ffi::ResultBuffer<ffi::S32> ids, ffi::ResultBuffer<ffi::F32> model_log_probs,
                          ffi::ResultBuffer<ffi::F32> sampling_log_probs, ffi::ResultBuffer<ffi::F32> state_out,
                          ffi::ResultBuffer<ffi::F32> logits_out) {
  const auto dims = state.dimensions();
  const int64_t layers = dims.size() == 4 ? dims[0] : 0, rows = layers ? dims[2] : 0, units = layers ? dims[3] : 0;
  const int64_t width = 4 * units, vocab = table.dimensions().size() == 2 ? table.dimensions()[0] : 0;
  const int64_t steps = uniforms.dimensions().size() == 2 ? uniforms.dimensions()[1] : 0;
  if (!(layers > 0 && units > 0 && vocab > 0 && rows * steps <= std::numeric_limits<int>::max() &&
        HasShape(dims, {layers, 2, rows, units}) &&
        HasShape(table.dimensions(), {vocab, width}) && HasShape(recurrent.dimensions(), {layers, units, width}) &&
        HasShape(inputs.dimensions(), {layers - 1, units, width}) && HasShape(biases.dimensions(), {layers - 1, width}) &&
        HasShape(head_kernel.dimensions(), {units, vocab}) && HasShape(head_bias.dimensions(), {vocab}) &&
        HasShape(logits.dimensions(), {rows, vocab}) && HasShape(uniforms.dimensions(), {rows, steps}) &&
        HasShape(temperatures.dimensions(), {rows})))
    return ffi::Error::InvalidArgument(
        "lstm sample: expected table [vocab, 4*units], recurrent [layers, units, 4*units], inputs [layers - 1, "
        "units, 4*units], biases [layers - 1, 4*units], head [units, vocab] and [vocab], state [layers, 2, rows, "
        "units], logits [rows, vocab], uniforms [rows, steps] and temperatures [rows]");
  if (auto error = CheckOpenblas(); error.failure()) return error;
  return Guarded([&] {
    std::vector<StepMatmul> recurrent_matmuls, input_matmuls;
    for (int64_t l = 0; l < layers; ++l) {
      recurrent_matmuls.emplace_back(recurrent.typed_data() + l * units * width, units, width, steps);
      if (l > 0) input_matmuls.emplace_back(inputs.typed_data() + (l - 1) * units * width, units, width, steps);
    }
    const float* state_in = state.typed_data();
    ParallelBlocks(pool, RowBlocks(rows, steps), rows, [&](int64_t, int64_t first, int64_t n) {
      // This block's rows: each layer's h, its c in two buffers (a step reads one, writes the other), the gates,
      // the input projection of the layers above the first, the logits and the draw's scratch.
      std::vector<float> h(layers * n * units), c(2 * layers * n * units), z(n * width), x(n * width);
      std::vector<float> row_logits(n * vocab), weights(vocab);
      std::vector<const float*> x_rows(n);
      for (int64_t l = 0; l < layers; ++l) {
        std::memcpy(h.data() + l * n * units, state_in + (2 * l * rows + first) * units, sizeof(float) * n * units);
        std::memcpy(c.data() + 2 * l * n * units, state_in + ((2 * l + 1) * rows + first) * units,
                    sizeof(float) * n * units);
      }
      std::memcpy(row_logits.data(), logits.typed_data() + first * vocab, sizeof(float) * n * vocab);
      for (int64_t t = 0; t < steps; ++t) {
        for (int64_t b = 0; b < n; ++b) {
          const int64_t at = (first + b) * steps + t;
          const int32_t id = loops->draw_row(vocab, row_logits.data() + b * vocab, uniforms.typed_data()[at],
                                             temperatures.typed_data()[first + b], weights.data(),
                                             model_log_probs->typed_data() + at, sampling_log_probs->typed_data() + at);
          ids->typed_data()[at] = id;
          x_rows[b] = TableRow(table.typed_data(), vocab, width, id);
        }
        for (int64_t l = 0; l < layers; ++l) {
          float* h_l = h.data() + l * n * units;
          if (l > 0) {  // The input projection of the layer below's new h.
            input_matmuls[l - 1](n, h_l - n * units, x.data());
            for (int64_t b = 0; b < n; ++b) {
              loops->add_to(width, biases.typed_data() + (l - 1) * width, x.data() + b * width);
              x_rows[b] = x.data() + b * width;
            }
          }
          float* c_prev = c.data() + (2 * l + t % 2) * n * units;
          float* c_next = c.data() + (2 * l + (t + 1) % 2) * n * units;
          recurrent_matmuls[l](n, h_l, z.data());
          loops->step_forward(n, units, z.data(), x_rows.data(), c_prev, c_next, h_l);
        }
        loops->rows_matmul(n, units, vocab, h.data() + (layers - 1) * n * units, head_kernel.typed_data(),
                           head_bias.typed_data(), row_logits.data());
      }
      for (int64_t l = 0; l < layers; ++l) {
        const float* c_last = c.data() + (2 * l + steps % 2) * n * units;
        std::memcpy(state_out->typed_data() + (2 * l * rows + first) * units, h.data() + l * n * units,
                    sizeof(float) * n * units);
        std::memcpy(state_out->typed_data() + ((2 * l + 1) * rows + first) * units, c_last, sizeof(float) * n * units);
      }
      std::memcpy(logits_out->typed_data() + first * vocab, row_logits.data(), sizeof(float) * n * vocab);
    });
    return ffi::Error::Success();
  });
}
}  // namespace

// Called once by charlstm.lstm.cpu_kernel before any handler runs, with the addresses of scipy-openblas32's
// scipy_cblas_sgemm, scipy_openblas_get_num_threads and scipy_openblas_set_num_threads.
extern "C" void CharlstmUseOpenblas(void* sgemm, void* get_num_threads, void* set_num_threads) {
  openblas.sgemm = reinterpret_cast<decltype(openblas.sgemm)>(sgemm);
  openblas.get_num_threads = reinterpret_cast<decltype(openblas.get_num_threads)>(get_num_threads);
  openblas.set_num_threads = reinterpret_cast<decltype(openblas.set_num_threads)>(set_num_threads);
}

// The build and the threading, for run_info.jsonl (charlstm.lstm.cpu_kernel.build_info): the compiler that
// built this file, the flags setup.py recorded, and the threads a batch is split over (call after the above).
#ifndef CHARLSTM_BUILD_FLAGS
#define CHARLSTM_BUILD_FLAGS "not recorded"
#endif
#if defined(__GNUC__) && !defined(__clang__)
#define CHARLSTM_COMPILER "GCC " __VERSION__
#elif defined(__VERSION__)
#define CHARLSTM_COMPILER __VERSION__
#else
#define CHARLSTM_COMPILER "unknown"
#endif
extern "C" const char* CharlstmCompiler() { return CHARLSTM_COMPILER; }
extern "C" const char* CharlstmBuildFlags() { return CHARLSTM_BUILD_FLAGS; }
extern "C" int CharlstmThreads() { return KernelThreads(); }

// The loops' copies this CPU runs, best first, comma-separated; the one in use; and a switch to the one
// named (0), refused for a name this CPU cannot run or that was not compiled (1). The handlers read the
// choice on every call, so a switch between calls needs no recompilation.
extern "C" const char* CharlstmLoopsHere() {
  static const std::string names = [] {
    std::string joined;
    for (const auto& candidate : kLoops)
      if (candidate.runs_here()) joined += (joined.empty() ? "" : ",") + std::string(candidate.name);
    return joined;
  }();
  return names.c_str();
}
extern "C" const char* CharlstmLoopsInUse() { return loops->name; }

// Reads x [n] (n a multiple of 64) `passes` times with the loops in use; returns the sum, so that no pass can be
// skipped and the caller can check it. For the benchmarks' memory-bound limit
// (charlstm.lstm.cpu_kernel.read_bytes_per_second).
extern "C" double CharlstmReadFloats(const float* x, int64_t n, int64_t passes) {
  double total = 0.0;
  for (int64_t pass = 0; pass < passes; ++pass) total += loops->sum_floats(n, x);
  return total;
}
extern "C" int CharlstmUseLoops(const char* name) {
  for (const auto& candidate : kLoops)
    if (std::strcmp(candidate.name, name) == 0 && candidate.runs_here()) {
      loops = &candidate;
      return 0;
    }
  return 1;
}

// Each handler's binding (buffers in, results out) is deduced from its function's signature.
XLA_FFI_DEFINE_HANDLER_SYMBOL(CharlstmLstmForward, LstmForwardImpl);
XLA_FFI_DEFINE_HANDLER_SYMBOL(CharlstmLstmInference, LstmInferenceImpl);
XLA_FFI_DEFINE_HANDLER_SYMBOL(CharlstmLstmBackward, LstmBackwardImpl);
XLA_FFI_DEFINE_HANDLER_SYMBOL(CharlstmLstmSample, LstmSampleImpl);
