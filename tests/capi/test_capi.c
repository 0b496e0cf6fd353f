/* The C ABI (epx.h) from a C11 program that includes nothing else of epx:
 * normal dispatch, cached dispatch and combine, low-latency dispatch and
 * combine (with and without hooks) on random data, each checked bit for bit
 * against a plain C reference computed here from every rank's inputs (each
 * rank can regenerate any rank's inputs from its seed); then bad input
 * (status codes and last-error text, the buffer usable afterwards) and abort.
 * Every rank takes part in every collective call before any verdict: a
 * failed check is counted, never a reason to return early. */
#include <epx/epx.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { H = 256, K = 3, MAX_TOKENS = 24 };

static int g_rank, g_size, g_failures;
static int* g_node_of; /* node of every rank */

#define CHECK(cond, ...)                                                                         \
  do {                                                                                           \
    if (!(cond)) {                                                                               \
      fprintf(stderr, "[rank %d] %s:%d: check failed: %s: ", g_rank, __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                                              \
      fprintf(stderr, "\n");                                                                     \
      ++g_failures;                                                                              \
    }                                                                                            \
  } while (0)

/* A call that must succeed. */
#define OK(call)                                                                  \
  do {                                                                            \
    epxResult_t ok_rc_ = (call);                                                  \
    CHECK(ok_rc_ == epxSuccess, "%s -> %s: %s", #call, epxGetErrorString(ok_rc_), \
          epxGetLastError());                                                     \
  } while (0)

/* A call that must fail with `code` and a last error containing `text`. */
static void expect_error(epxResult_t rc, epxResult_t code, const char* text, const char* what) {
  CHECK(rc == code, "%s: %s, expected %s (last error: %s)", what, epxGetErrorString(rc),
        epxGetErrorString(code), epxGetLastError());
  CHECK(strstr(epxGetLastError(), text) != NULL, "%s: last error \"%s\" lacks \"%s\"", what,
        epxGetLastError(), text);
}

/* splitmix64: the same stream on every rank for a given seed. */
static uint64_t next_u64(uint64_t* s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
static float next_float(uint64_t* s) { /* in [-2, 2), never exactly 0 */
  return ((float)(next_u64(s) >> 40) + 0.5f) / (float)(1 << 24) * 4.0f - 2.0f;
}

/* One rank's inputs of one round. */
typedef struct {
  int64_t T;
  float* x;     /* [T,H] */
  int64_t* idx; /* [T,K]: distinct experts or -1 */
  float* w;     /* [T,K] */
} Inputs;

static Inputs make_inputs(int rank, int round, int num_experts, int64_t max_tokens) {
  Inputs in;
  uint64_t s = 1000003ull * (uint64_t)rank + 7919ull * (uint64_t)round + 17;
  /* Rank 1 sends nothing; the others 1 to max_tokens tokens. */
  in.T = rank == 1 ? 0 : 1 + (int64_t)(next_u64(&s) % (uint64_t)max_tokens);
  in.x = malloc(sizeof(float) * (size_t)(in.T * H + 1));
  in.idx = malloc(sizeof(int64_t) * (size_t)(in.T * K + 1));
  in.w = malloc(sizeof(float) * (size_t)(in.T * K + 1));
  for (int64_t i = 0; i < in.T * H; ++i) in.x[i] = next_float(&s);
  for (int64_t t = 0; t < in.T; ++t)
    for (int k = 0; k < K; ++k) {
      int64_t e = -1;
      if (next_u64(&s) % 5 != 0) {
        int repeat;
        do { /* distinct within the token */
          e = (int64_t)(next_u64(&s) % (uint64_t)num_experts);
          repeat = 0;
          for (int j = 0; j < k; ++j) repeat |= in.idx[t * K + j] == e;
        } while (repeat);
      }
      in.idx[t * K + k] = e;
      in.w[t * K + k] = next_float(&s);
    }
  return in;
}
static void free_inputs(Inputs* in) {
  free(in->x);
  free(in->idx);
  free(in->w);
}

static epxTensor_t tensor2(void* data, epxDataType_t dtype, int64_t d0, int64_t d1) {
  epxTensor_t t = {data, dtype, 2, {d0, d1, 0, 0}};
  return t;
}

static int token_goes_to(const Inputs* in, int64_t t, int rank, int experts_per_rank) {
  for (int k = 0; k < K; ++k) {
    int64_t e = in->idx[t * K + k];
    if (e >= 0 && e / experts_per_rank == rank) return 1;
  }
  return 0;
}

/* Normal mode, round `round`: layout, dispatch, combine, cached dispatch. */
static void check_normal(epxBuffer_t buf, int round, int E) {
  const int per_rank = E / g_size;
  Inputs* all = malloc(sizeof(Inputs) * (size_t)g_size);
  for (int s = 0; s < g_size; ++s) all[s] = make_inputs(s, round, E, 40);
  const Inputs* me = &all[g_rank];

  epxTensor_t idx = tensor2(me->idx, epxInt64, me->T, K);
  epxTensor_t x = tensor2(me->x, epxFloat32, me->T, H);
  epxTensor_t w = tensor2(me->w, epxFloat32, me->T, K);
  epxLayout_t layout = NULL;
  OK(epxGetDispatchLayout(buf, &idx, E, &layout));
  epxLayoutOutputs_t lo;
  memset(&lo, 0, sizeof lo);
  OK(epxLayoutGetOutputs(layout, &lo));
  if (lo.num_tokens_per_rank.data && lo.is_token_in_rank.data && lo.num_tokens_per_node.data &&
      lo.num_tokens_per_expert.data) {
    const int32_t* per_rank_count = lo.num_tokens_per_rank.data;
    const int32_t* per_node = lo.num_tokens_per_node.data;
    const int32_t* per_expert = lo.num_tokens_per_expert.data;
    const uint8_t* in_rank = lo.is_token_in_rank.data;
    CHECK(lo.is_token_in_rank.dtype == epxBool && lo.is_token_in_rank.ndim == 2 &&
              lo.is_token_in_rank.shape[0] == me->T && lo.is_token_in_rank.shape[1] == g_size,
          "is_token_in_rank has the wrong type or shape");
    for (int r = 0; r < g_size; ++r) {
      int32_t n = 0;
      for (int64_t t = 0; t < me->T; ++t) {
        const int goes = token_goes_to(me, t, r, per_rank);
        n += goes;
        CHECK(in_rank[t * g_size + r] == goes, "is_token_in_rank[%lld,%d]", (long long)t, r);
      }
      CHECK(per_rank_count[r] == n, "num_tokens_per_rank[%d] = %d, expected %d", r,
            per_rank_count[r], n);
    }
    int num_nodes = lo.num_tokens_per_node.shape[0];
    for (int nd = 0; nd < num_nodes; ++nd) {
      int32_t n = 0;
      for (int64_t t = 0; t < me->T; ++t) {
        int goes = 0;
        for (int r = 0; r < g_size; ++r)
          goes |= g_node_of[r] == nd && token_goes_to(me, t, r, per_rank);
        n += goes;
      }
      CHECK(per_node[nd] == n, "num_tokens_per_node[%d] = %d, expected %d", nd, per_node[nd], n);
    }
    for (int e = 0; e < E; ++e) {
      int32_t n = 0;
      for (int64_t i = 0; i < me->T * K; ++i) n += me->idx[i] == e;
      CHECK(per_expert[e] == n, "num_tokens_per_expert[%d] = %d, expected %d", e, per_expert[e], n);
    }
  } else {
    CHECK(0, "layout outputs missing");
  }

  epxDispatchResult_t res = NULL;
  OK(epxDispatch(buf, &x, NULL, &idx, &w, layout, NULL, &res));
  epxDispatchOutputs_t d;
  memset(&d, 0, sizeof d);
  OK(epxDispatchResultGetOutputs(res, &d));
  epxHandle_t handle = NULL;
  OK(epxDispatchResultGetHandle(res, &handle));

  /* The reference receive: by source rank, then source token. */
  int64_t M = 0;
  for (int s = 0; s < g_size; ++s)
    for (int64_t t = 0; t < all[s].T; ++t) M += token_goes_to(&all[s], t, g_rank, per_rank);
  int64_t T_seen = -1, M_seen = -1;
  OK(epxHandleGetCounts(handle, &T_seen, &M_seen));
  CHECK(T_seen == me->T && M_seen == M, "handle counts T=%lld M=%lld, expected %lld %lld",
        (long long)T_seen, (long long)M_seen, (long long)me->T, (long long)M);
  CHECK(d.x.ndim == 2 && d.x.shape[0] == M && d.x.shape[1] == H && d.x.dtype == epxFloat32,
        "dispatched x is [%lld,%lld], expected [%lld,%d] f32", (long long)d.x.shape[0],
        (long long)d.x.shape[1], (long long)M, H);
  CHECK(d.x_scales.data == NULL && d.x_scales.ndim == 0, "x_scales present without fp8");
  CHECK(d.num_recv_tokens_per_expert.ndim == 1 && d.num_recv_tokens_per_expert.shape[0] == per_rank,
        "num_recv_tokens_per_expert has %lld entries, expected %d",
        (long long)d.num_recv_tokens_per_expert.shape[0], per_rank);
  float* y = malloc(sizeof(float) * (size_t)(M * H + 1));
  if (d.x.shape[0] == M && d.x.ndim == 2 && d.num_recv_tokens_per_expert.shape[0] == per_rank) {
    const float* rx = d.x.data;
    const int64_t* ridx = d.topk_idx.data;
    const float* rw = d.topk_weights.data;
    const int32_t* recv_per_expert = d.num_recv_tokens_per_expert.data;
    int32_t* count = calloc((size_t)per_rank, sizeof(int32_t));
    int64_t m = 0;
    for (int s = 0; s < g_size; ++s)
      for (int64_t t = 0; t < all[s].T; ++t) {
        if (!token_goes_to(&all[s], t, g_rank, per_rank)) continue;
        CHECK(memcmp(rx + m * H, all[s].x + t * H, sizeof(float) * H) == 0,
              "row %lld is not token %lld of rank %d", (long long)m, (long long)t, s);
        for (int k = 0; k < K; ++k) {
          const int64_t e = all[s].idx[t * K + k];
          const int local = e >= 0 && e / per_rank == g_rank;
          const int64_t want = local ? e - (int64_t)g_rank * per_rank : -1;
          CHECK(ridx[m * K + k] == want, "topk_idx[%lld,%d] = %lld, expected %lld", (long long)m, k,
                (long long)ridx[m * K + k], (long long)want);
          CHECK(rw[m * K + k] == (local ? all[s].w[t * K + k] : 0.0f), "topk_weights[%lld,%d]",
                (long long)m, k);
          if (local) ++count[want];
        }
        /* The expert output of this rank: the row times (rank + 1). */
        for (int h = 0; h < H; ++h) y[m * H + h] = rx[m * H + h] * (float)(g_rank + 1);
        ++m;
      }
    for (int e = 0; e < per_rank; ++e)
      CHECK(recv_per_expert[e] == count[e], "num_recv_tokens_per_expert[%d] = %d, expected %d", e,
            recv_per_expert[e], count[e]);
    free(count);
  } else {
    memset(y, 0, sizeof(float) * (size_t)(M * H + 1));
  }

  /* combine: per token, over nodes ascending, the node's f32 sum over its
   * ranks ascending, each sum from +0. */
  float* out = malloc(sizeof(float) * (size_t)(me->T * H + 1));
  epxTensor_t yt = tensor2(y, epxFloat32, M, H);
  epxTensor_t ot = tensor2(out, epxFloat32, me->T, H);
  OK(epxCombine(buf, &yt, handle, NULL, &ot));
  int num_nodes = 0;
  for (int r = 0; r < g_size; ++r)
    num_nodes = g_node_of[r] + 1 > num_nodes ? g_node_of[r] + 1 : num_nodes;
  int64_t bad = 0;
  for (int64_t t = 0; t < me->T; ++t)
    for (int h = 0; h < H; ++h) {
      float total = 0.0f;
      for (int nd = 0; nd < num_nodes; ++nd) {
        float partial = 0.0f;
        for (int r = 0; r < g_size; ++r)
          if (g_node_of[r] == nd && token_goes_to(me, t, r, per_rank))
            partial += me->x[t * H + h] * (float)(r + 1);
        total += partial;
      }
      bad += memcmp(&total, &out[t * H + h], sizeof(float)) != 0;
    }
  CHECK(bad == 0, "combine: %lld of %lld values differ from the reference", (long long)bad,
        (long long)(me->T * H));

  /* Cached dispatch of 2x: the same rows, doubled (exact in f32). */
  for (int64_t i = 0; i < me->T * H; ++i) out[i] = 2.0f * me->x[i];
  epxTensor_t x2 = tensor2(out, epxFloat32, me->T, H);
  epxDispatchResult_t res2 = NULL;
  OK(epxDispatchCached(buf, &x2, NULL, handle, NULL, &res2));
  epxDispatchOutputs_t d2;
  memset(&d2, 0, sizeof d2);
  OK(epxDispatchResultGetOutputs(res2, &d2));
  if (d2.x.ndim == 2 && d2.x.shape[0] == M && d.x.shape[0] == M) {
    const float* a = d.x.data;
    const float* b = d2.x.data;
    int64_t diff = 0;
    for (int64_t i = 0; i < M * H; ++i) diff += b[i] != 2.0f * a[i];
    CHECK(diff == 0, "cached dispatch: %lld values differ", (long long)diff);
  } else {
    CHECK(0, "cached dispatch returned [%lld] rows, expected %lld", (long long)d2.x.shape[0],
          (long long)M);
  }
  OK(epxDispatchResultDestroy(res2));
  OK(epxDispatchResultDestroy(res));
  OK(epxHandleDestroy(handle)); /* after its result: the handle lives on its own */
  OK(epxLayoutDestroy(layout));
  free(out);
  free(y);
  for (int s = 0; s < g_size; ++s) free_inputs(&all[s]);
  free(all);
}

/* Low-latency mode: dispatch, expert outputs (row times (expert + 1)), combine. */
static void check_low_latency(epxBuffer_t buf, int round, int E, int hooks) {
  const int per_rank = E / g_size;
  const int64_t slots = (int64_t)g_size * MAX_TOKENS;
  Inputs* all = malloc(sizeof(Inputs) * (size_t)g_size);
  for (int s = 0; s < g_size; ++s) all[s] = make_inputs(s, round, E, MAX_TOKENS);
  const Inputs* me = &all[g_rank];
  epxTensor_t x = tensor2(me->x, epxFloat32, me->T, H);
  epxTensor_t idx = tensor2(me->idx, epxInt64, me->T, K);
  epxTensor_t w = tensor2(me->w, epxFloat32, me->T, K);
  epxLowLatencyConfig_t cfg = EPX_LOW_LATENCY_CONFIG_INIT;
  cfg.fp8 = 0; /* f32 payload: the rows arrive bit for bit */
  cfg.return_recv_hook = hooks;

  epxLowLatencyResult_t res = NULL;
  epxHook_t hook = NULL;
  OK(epxLowLatencyDispatch(buf, &x, &idx, &cfg, &res, &hook));
  CHECK((hook != NULL) == (hooks != 0), "hook %p with return_recv_hook = %d", (void*)hook, hooks);
  if (hook) OK(epxHookWait(hook));
  epxLowLatencyOutputs_t o;
  memset(&o, 0, sizeof o);
  OK(epxLowLatencyResultGetOutputs(res, &o));
  epxLowLatencyHandle_t handle = NULL;
  OK(epxLowLatencyResultGetHandle(res, &handle));
  const int shape_ok = o.x.ndim == 3 && o.x.shape[0] == per_rank && o.x.shape[1] == slots &&
                       o.x.shape[2] == H && o.x.dtype == epxFloat32 && o.count.ndim == 1 &&
                       o.count.shape[0] == per_rank;
  CHECK(shape_ok, "low-latency x is [%lld,%lld,%lld], expected [%d,%lld,%d] f32",
        (long long)o.x.shape[0], (long long)o.x.shape[1], (long long)o.x.shape[2], per_rank,
        (long long)slots, H);
  float* y = calloc((size_t)(per_rank * slots * H), sizeof(float));
  if (shape_ok) {
    const float* rx = o.x.data;
    const int32_t* count = o.count.data;
    for (int le = 0; le < per_rank; ++le) {
      const int64_t e = (int64_t)g_rank * per_rank + le;
      int64_t row = 0;
      for (int s = 0; s < g_size; ++s)
        for (int64_t t = 0; t < all[s].T; ++t) {
          int has = 0;
          for (int k = 0; k < K; ++k) has |= all[s].idx[t * K + k] == e;
          if (!has) continue;
          if (row < count[le])
            CHECK(memcmp(rx + (le * slots + row) * H, all[s].x + t * H, sizeof(float) * H) == 0,
                  "expert %lld row %lld is not token %lld of rank %d", (long long)e, (long long)row,
                  (long long)t, s);
          ++row;
        }
      CHECK(count[le] == row, "count[%d] = %d, expected %lld", le, count[le], (long long)row);
      for (int64_t r = 0; r < count[le] && r < slots; ++r)
        for (int h = 0; h < H; ++h)
          y[(le * slots + r) * H + h] = rx[(le * slots + r) * H + h] * (float)(e + 1);
    }
  }
  float* out = malloc(sizeof(float) * (size_t)(me->T * H + 1));
  epxTensor_t yt = {y, epxFloat32, 3, {per_rank, slots, H, 0}};
  epxTensor_t ot = tensor2(out, epxFloat32, me->T, H);
  OK(epxLowLatencyCombine(buf, &yt, &idx, &w, handle, &cfg, &ot, &hook));
  CHECK((hook != NULL) == (hooks != 0), "combine hook %p with return_recv_hook = %d", (void*)hook,
        hooks);
  if (hook) OK(epxHookWait(hook));
  int64_t bad = 0;
  for (int64_t t = 0; t < me->T; ++t)
    for (int h = 0; h < H; ++h) {
      float acc = 0.0f;
      for (int k = 0; k < K; ++k) {
        const int64_t e = me->idx[t * K + k];
        if (e < 0) continue;
        const float expert_out = me->x[t * H + h] * (float)(e + 1);
        acc += me->w[t * K + k] * expert_out;
      }
      bad += memcmp(&acc, &out[t * H + h], sizeof(float)) != 0;
    }
  CHECK(bad == 0, "low-latency combine: %lld of %lld values differ from the reference",
        (long long)bad, (long long)(me->T * H));
  OK(epxLowLatencyHandleDestroy(handle));
  OK(epxLowLatencyResultDestroy(res));
  free(out);
  free(y);
  for (int s = 0; s < g_size; ++s) free_inputs(&all[s]);
  free(all);
}

/* Bad input: every rank gets the error (the rank at fault its own sentence),
 * and the buffer keeps working. */
static void check_bad_input(epxGroup_t group, epxBuffer_t buf, int E) {
  char want[64];
  CHECK(strcmp(epxGetErrorString(epxTimeout), "epxTimeout") == 0, "epxGetErrorString(epxTimeout)");
  CHECK(strcmp(epxGetErrorString((epxResult_t)99), "unknown epxResult_t") == 0,
        "epxGetErrorString(99)");

  /* Local: NULL objects. */
  epxBuffer_t none = NULL;
  expect_error(epxBufferCreate(NULL, NULL, &none), epxInvalidArgument,
               "epxBufferCreate: group is NULL", "NULL group");
  CHECK(none == NULL, "a failed create set the buffer");
  int v = 0;
  expect_error(epxGroupRank(NULL, &v), epxInvalidArgument, "group is NULL", "epxGroupRank(NULL)");
  OK(epxBufferDestroy(NULL));

  Inputs in = make_inputs(g_rank, 7, E, 20);
  epxTensor_t idx = tensor2(in.idx, epxInt64, in.T, K);
  epxTensor_t x = tensor2(in.x, epxFloat32, in.T, H);
  epxTensor_t w = tensor2(in.w, epxFloat32, in.T, K);
  epxLayout_t layout = NULL;

  /* A C struct that describes no tensor, on rank 0 only: every rank fails. */
  epxTensor_t bad_idx = idx;
  if (g_rank == 0) bad_idx.ndim = 7;
  expect_error(epxGetDispatchLayout(buf, &bad_idx, E, &layout), epxInvalidArgument,
               g_rank == 0 ? "epxGetDispatchLayout: topk_idx.ndim = 7, expected 0 to 4"
                           : "rank 0 rejected its input",
               "topk_idx.ndim = 7 on rank 0");
  CHECK(layout == NULL, "a failed layout was returned");

  /* A wrong dtype on every rank. */
  epxTensor_t f_idx = idx;
  f_idx.dtype = epxFloat32;
  expect_error(epxGetDispatchLayout(buf, &f_idx, E, &layout), epxInvalidArgument, "topk_idx",
               "f32 topk_idx");

  /* An expert id out of range on the last rank (that rank has tokens unless it is rank 1). */
  OK(epxGetDispatchLayout(buf, &idx, E, &layout));
  const int culprit = g_size - 1;
  if (g_size > 1 && culprit != 1) {
    epxTensor_t big = idx;
    int64_t saved = in.T > 0 ? in.idx[0] : 0;
    if (g_rank == culprit && in.T > 0) in.idx[0] = E + 5;
    epxLayout_t l2 = NULL;
    snprintf(want, sizeof want, "rank %d rejected its input", culprit);
    expect_error(epxGetDispatchLayout(buf, &big, E, &l2), epxInvalidArgument,
                 g_rank == culprit ? "expected -1 or 0 <= id < num_experts" : want,
                 "expert id out of range on the last rank");
    if (in.T > 0) in.idx[0] = saved;
  }

  /* A config struct that is not one (size 0, then a future version) on rank 0. */
  epxDispatchConfig_t cfg = EPX_DISPATCH_CONFIG_INIT;
  if (g_rank == 0) cfg.size = 0;
  epxDispatchResult_t res = NULL;
  expect_error(epxDispatch(buf, &x, NULL, &idx, &w, layout, &cfg, &res), epxInvalidArgument,
               g_rank == 0 ? "epxDispatchConfig_t.size = 0" : "rank 0 rejected its input",
               "epxDispatchConfig_t.size = 0");
  cfg = (epxDispatchConfig_t)EPX_DISPATCH_CONFIG_INIT;
  if (g_rank == 0) cfg.version = 99;
  expect_error(epxDispatch(buf, &x, NULL, &idx, &w, layout, &cfg, &res), epxInvalidArgument,
               g_rank == 0 ? "epxDispatchConfig_t.version = 99" : "rank 0 rejected its input",
               "epxDispatchConfig_t.version = 99");
  /* A bad optional input (x_scales with NULL data) fails too. */
  epxTensor_t bad_scales = tensor2(NULL, epxFloat32, in.T + 1, H / 128);
  expect_error(epxDispatch(buf, &x, &bad_scales, &idx, &w, layout, NULL, &res), epxInvalidArgument,
               "x_scales.data is NULL", "x_scales with NULL data");
  CHECK(res == NULL, "a failed dispatch returned a result");

  /* The buffer still works; a wrong combine output fails only this rank's copy. */
  OK(epxDispatch(buf, &x, NULL, &idx, &w, layout, NULL, &res));
  epxHandle_t handle = NULL;
  OK(epxDispatchResultGetHandle(res, &handle));
  epxDispatchOutputs_t d;
  memset(&d, 0, sizeof d);
  OK(epxDispatchResultGetOutputs(res, &d));
  float* out = malloc(sizeof(float) * (size_t)(in.T * H + 1));
  epxTensor_t wrong = tensor2(out, epxFloat32, in.T, H + 1);
  epxTensor_t right = tensor2(out, epxFloat32, in.T, H);
  epxResult_t rc = epxCombine(buf, &d.x, handle, NULL, g_rank == 0 ? &wrong : &right);
  if (g_rank == 0)
    expect_error(rc, epxInvalidArgument, "only this copy failed", "combine into a wrong out");
  else
    CHECK(rc == epxSuccess, "combine on a good rank: %s", epxGetLastError());
  OK(epxDispatchResultDestroy(res));
  OK(epxHandleDestroy(handle));
  OK(epxLayoutDestroy(layout));
  free(out);

  /* Low-latency: more tokens than the buffer was made for. */
  Inputs many = make_inputs(g_rank, 8, E, MAX_TOKENS);
  float* xs = calloc((size_t)(MAX_TOKENS + 1) * H, sizeof(float));
  int64_t* ids = malloc(sizeof(int64_t) * (MAX_TOKENS + 1) * K);
  for (int64_t i = 0; i < (MAX_TOKENS + 1) * K; ++i) ids[i] = -1;
  epxTensor_t xl = tensor2(xs, epxFloat32, g_rank == 0 ? MAX_TOKENS + 1 : 1, H);
  epxTensor_t il = tensor2(ids, epxInt64, g_rank == 0 ? MAX_TOKENS + 1 : 1, K);
  epxLowLatencyResult_t lres = NULL;
  expect_error(epxLowLatencyDispatch(buf, &xl, &il, NULL, &lres, NULL), epxInvalidArgument,
               g_rank == 0 ? "max_tokens_per_rank" : "rank 0 rejected its input",
               "too many low-latency tokens on rank 0");
  free(xs);
  free(ids);
  free_inputs(&many);
  free_inputs(&in);

  /* Agreed errors leave the group healthy (C++: Error::poisoned() false). */
  epxResult_t status = epxInternalError;
  OK(epxGroupGetAsyncError(group, &status));
  CHECK(status == epxSuccess, "after agreed bad input the group says %s: %s",
        epxGetErrorString(status), epxGetLastError());
  expect_error(epxGroupGetAsyncError(NULL, &status), epxInvalidArgument, "group is NULL",
               "epxGroupGetAsyncError(NULL)");
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  epxGroup_t group = NULL;
  epxResult_t rc = epxGroupCreate(MPI_COMM_WORLD, 0, &group);
  if (rc != epxSuccess) {
    fprintf(stderr, "epxGroupCreate: %s: %s\n", epxGetErrorString(rc), epxGetLastError());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  int node = -1, num_nodes = 0, local_rank = -1, local_size = 0, mpi_rank = -1;
  OK(epxGroupRank(group, &g_rank));
  OK(epxGroupSize(group, &g_size));
  OK(epxGroupNode(group, &node));
  OK(epxGroupNumNodes(group, &num_nodes));
  OK(epxGroupLocalRank(group, &local_rank));
  OK(epxGroupLocalSize(group, &local_size));
  MPI_Comm_rank(MPI_COMM_WORLD, &mpi_rank);
  CHECK(g_rank == mpi_rank, "rank %d, MPI says %d", g_rank, mpi_rank);
  g_node_of = malloc(sizeof(int) * (size_t)g_size);
  MPI_Allgather(&node, 1, MPI_INT, g_node_of, 1, MPI_INT, MPI_COMM_WORLD);
  CHECK(num_nodes * local_size == g_size && local_rank >= 0 && local_rank < local_size,
        "topology: %d nodes of %d ranks, local rank %d, for %d ranks", num_nodes, local_size,
        local_rank, g_size);
  int major = -1, minor = -1, patch = -1;
  OK(epxGetVersion(&major, &minor, &patch));

  const int E = 3 * g_size;
  epxBufferConfig_t cfg = EPX_BUFFER_CONFIG_INIT;
  cfg.num_bytes = (size_t)1 << 20;
  cfg.timeout_s = 60;
  cfg.low_latency = 1;
  cfg.max_tokens_per_rank = MAX_TOKENS;
  cfg.hidden = H;
  cfg.num_experts = E;
  epxBuffer_t buf = NULL;
  rc = epxBufferCreate(group, &cfg, &buf);
  if (rc != epxSuccess) {
    fprintf(stderr, "epxBufferCreate: %s: %s\n", epxGetErrorString(rc), epxGetLastError());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  for (int round = 0; round < 2; ++round) check_normal(buf, round, E);
  for (int round = 0; round < 4; ++round) check_low_latency(buf, 10 + round, E, round % 2);
  check_bad_input(group, buf, E);
  check_normal(buf, 2, E); /* still usable after every bad input */

  /* Abort: the group is failed, the next call says so. */
  epxResult_t status = epxInternalError;
  OK(epxGroupGetAsyncError(group, &status));
  CHECK(status == epxSuccess, "async error %s before any abort", epxGetErrorString(status));
  MPI_Barrier(MPI_COMM_WORLD); /* every rank is done with the group's traffic */
  OK(epxGroupAbort(group, "test_capi stops here"));
  OK(epxGroupGetAsyncError(group, &status));
  CHECK(status == epxPeerFailure, "async error %s after abort", epxGetErrorString(status));
  CHECK(strstr(epxGetLastError(), "test_capi stops here") != NULL, "abort reason: %s",
        epxGetLastError());
  int64_t none_idx = -1;
  epxTensor_t one = tensor2(&none_idx, epxInt64, 1, 1);
  epxLayout_t layout = NULL;
  expect_error(epxGetDispatchLayout(buf, &one, E, &layout), epxPeerFailure, "test_capi stops here",
               "a call on an aborted group");

  OK(epxBufferDestroy(buf));
  OK(epxGroupDestroy(group));
  int failures = 0;
  MPI_Allreduce(&g_failures, &failures, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (g_rank == 0)
    printf("test_capi: epx %d.%d.%d, %d ranks, %d nodes: %s (%d failed checks)\n", major, minor,
           patch, g_size, num_nodes, failures == 0 ? "OK" : "FAILED", failures);
  free(g_node_of);
  MPI_Finalize();
  return failures == 0 ? 0 : 1;
}
