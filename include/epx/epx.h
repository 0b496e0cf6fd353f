/* epx.h: the C ABI of epx, for C programs and for other languages' bindings.
 *
 * In NCCL's style: opaque handles, every call returns an epxResult_t, and the
 * sentence that explains a failure is epxGetLastError() (per thread). The
 * calls are the C++ API of include/epx/comm.hpp on host memory, described by
 * epxTensor_t; docs/api.md shows both side by side.
 *
 * Collective calls (marked so) must be made by every rank of the group, in
 * the same order. Bad input on any rank gives epxInvalidArgument on every
 * rank, before data moves, and the objects stay usable; epxTimeout and
 * epxPeerFailure mean the group is failed (destroy its objects). Whether a
 * failure left the objects usable is the group's state: epxGroupGetAsyncError
 * (an InvalidArgument from calls that drifted apart aborts the group). Every wait
 * on a peer is bounded by epxBufferConfig_t.timeout_s (0: EPX_TIMEOUT_S, or
 * its default of 300 s).
 *
 * Lifetime: destroy objects in any order, but all of them before
 * MPI_Finalize. A Buffer keeps its Group alive; results, layouts and handles
 * keep their Buffer's memory alive. Destroying NULL is a no-op.
 */
#ifndef EPX_EPX_H
#define EPX_EPX_H

#include <stddef.h>
#include <stdint.h>

#include <mpi.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EPX_C_EXPORT __attribute__((visibility("default")))

/* Version of this header's structs. A config struct records the version and
 * size it was compiled with, so that a newer library reads an older struct. */
#define EPX_C_API_VERSION 1

typedef enum {
  epxSuccess = 0,
  epxInvalidArgument = 1, /* bad input, agreed by every rank: the objects stay usable */
  epxOutOfMemory = 2,
  epxTimeout = 3,     /* a wait on a peer passed its deadline: the group is failed */
  epxPeerFailure = 4, /* another rank failed or aborted the group */
  epxUnsupported = 5, /* this build lacks a capability the call needs */
  epxInternalError = 6,
  epxNumResults = 7
} epxResult_t;

/* Values equal to epx::DType. */
typedef enum {
  epxFloat32 = 0,
  epxBfloat16 = 1,
  epxFloat16 = 2,
  epxFloat8E4M3 = 3,
  epxFloat8E5M2 = 4,
  epxInt32 = 5,
  epxInt64 = 6,
  epxUint8 = 7,
  epxBool = 8, /* one byte, 0 or 1 */
  epxFloat64 = 9
} epxDataType_t;

#define EPX_MAX_DIMS 4

/* Row-major, contiguous host memory. As an input it is the caller's (epx
 * copies what it needs before returning). As an output of a Get call it is a
 * view into epx's memory, valid while the object it came from lives; an
 * output that does not exist has data NULL and ndim 0. */
typedef struct {
  void* data;
  epxDataType_t dtype;
  int ndim;                    /* 0 to EPX_MAX_DIMS */
  int64_t shape[EPX_MAX_DIMS]; /* shape[0..ndim-1]; the rest is ignored */
} epxTensor_t;

typedef struct epxGroup_s* epxGroup_t;
typedef struct epxBuffer_s* epxBuffer_t;
typedef struct epxLayout_s* epxLayout_t;
typedef struct epxDispatchResult_s* epxDispatchResult_t;
typedef struct epxHandle_s* epxHandle_t;
typedef struct epxLowLatencyResult_s* epxLowLatencyResult_t;
typedef struct epxLowLatencyHandle_s* epxLowLatencyHandle_t;
typedef struct epxHook_s* epxHook_t;

/* ---- Errors ---- */

/* "epxSuccess", "epxInvalidArgument", ... ("unknown epxResult_t" otherwise). */
EPX_C_EXPORT const char* epxGetErrorString(epxResult_t result);
/* The message of this thread's last failed call ("" before any failure): it
 * names the call, the argument, the value and the rank. Valid until this
 * thread's next failing epx call. */
EPX_C_EXPORT const char* epxGetLastError(void);
/* Library version, e.g. 0, 1, 0. */
EPX_C_EXPORT epxResult_t epxGetVersion(int* major, int* minor, int* patch);

/* ---- Group: an MPI communicator plus its node topology ---- */

/* Collective over comm (epx duplicates it: the caller may free its own).
 * ranks_per_node: 0 = EPX_RANKS_PER_NODE if set, else one node per host;
 * n > 0 splits hosts into virtual nodes of n consecutive ranks. */
EPX_C_EXPORT epxResult_t epxGroupCreate(MPI_Comm comm, int ranks_per_node, epxGroup_t* group);
EPX_C_EXPORT epxResult_t epxGroupDestroy(epxGroup_t group);
EPX_C_EXPORT epxResult_t epxGroupRank(epxGroup_t group, int* rank);
EPX_C_EXPORT epxResult_t epxGroupSize(epxGroup_t group, int* size);
EPX_C_EXPORT epxResult_t epxGroupNode(epxGroup_t group, int* node);
EPX_C_EXPORT epxResult_t epxGroupNumNodes(epxGroup_t group, int* num_nodes);
EPX_C_EXPORT epxResult_t epxGroupLocalRank(epxGroup_t group, int* local_rank);
EPX_C_EXPORT epxResult_t epxGroupLocalSize(epxGroup_t group, int* local_size);
/* Marks the group failed (not collective): every ongoing or later wait on it
 * fails with epxPeerFailure, on this rank and on every rank of the group. */
EPX_C_EXPORT epxResult_t epxGroupAbort(epxGroup_t group, const char* reason);
/* *status = epxSuccess, or epxPeerFailure (the reason in epxGetLastError())
 * once the group was aborted here or by a peer. */
EPX_C_EXPORT epxResult_t epxGroupGetAsyncError(epxGroup_t group, epxResult_t* status);

/* ---- Buffer ---- */

typedef struct {
  size_t size;          /* sizeof(epxBufferConfig_t), set by EPX_BUFFER_CONFIG_INIT */
  unsigned int version; /* EPX_C_API_VERSION */
  size_t num_bytes;     /* receive space per rank (grows when a dispatch needs more) */
  double timeout_s;     /* bound of every wait; 0: EPX_TIMEOUT_S or 300; INFINITY: none */
  int low_latency;      /* nonzero: also the low-latency buffers, for these shapes: */
  int max_tokens_per_rank;
  int hidden;
  int num_experts;
} epxBufferConfig_t;
#define EPX_BUFFER_CONFIG_INIT \
  { sizeof(epxBufferConfig_t), EPX_C_API_VERSION, (size_t)256 << 20, 0.0, 0, 0, 0, 0 }

/* Collective. config NULL: EPX_BUFFER_CONFIG_INIT. */
EPX_C_EXPORT epxResult_t epxBufferCreate(epxGroup_t group, const epxBufferConfig_t* config,
                                         epxBuffer_t* buffer);
/* Collective when the group spans several nodes (bounded by timeout_s). */
EPX_C_EXPORT epxResult_t epxBufferDestroy(epxBuffer_t buffer);

/* ---- Normal mode: layout, dispatch, combine ---- */

/* Collective. topk_idx: i64 [T,K], -1 = no expert; expert e lives on rank
 * e / (num_experts / R). */
EPX_C_EXPORT epxResult_t epxGetDispatchLayout(epxBuffer_t buffer, const epxTensor_t* topk_idx,
                                              int num_experts, epxLayout_t* layout);
typedef struct {
  epxTensor_t num_tokens_per_rank;   /* [R] i32 */
  epxTensor_t num_tokens_per_node;   /* [N] i32 */
  epxTensor_t num_tokens_per_expert; /* [E] i32 */
  epxTensor_t is_token_in_rank;      /* [T,R] bool */
} epxLayoutOutputs_t;
EPX_C_EXPORT epxResult_t epxLayoutGetOutputs(epxLayout_t layout, epxLayoutOutputs_t* outputs);
EPX_C_EXPORT epxResult_t epxLayoutDestroy(epxLayout_t layout);

typedef struct {
  size_t size;          /* sizeof(epxDispatchConfig_t) */
  unsigned int version; /* EPX_C_API_VERSION */
  int fp8;              /* cast f32/bf16 x to e4m3 with per-token 1x128 f32 scales */
  int ue8m0;            /* with fp8: scales rounded up to powers of two */
  int expert_alignment; /* num_recv_tokens_per_expert rounded up to a multiple of this */
} epxDispatchConfig_t;
#define EPX_DISPATCH_CONFIG_INIT \
  { sizeof(epxDispatchConfig_t), EPX_C_API_VERSION, 0, 0, 1 }

/* Collective. x: f32/bf16 [T,H], or e4m3 with x_scales f32 [T,H/128]
 * (x_scales NULL otherwise); topk_idx as given to the layout; topk_weights
 * f32 [T,K]. config NULL: EPX_DISPATCH_CONFIG_INIT. */
EPX_C_EXPORT epxResult_t epxDispatch(epxBuffer_t buffer, const epxTensor_t* x,
                                     const epxTensor_t* x_scales, const epxTensor_t* topk_idx,
                                     const epxTensor_t* topk_weights, epxLayout_t layout,
                                     const epxDispatchConfig_t* config,
                                     epxDispatchResult_t* result);
/* Collective: the routing of `handle` with a new payload (the backward of combine). */
EPX_C_EXPORT epxResult_t epxDispatchCached(epxBuffer_t buffer, const epxTensor_t* x,
                                           const epxTensor_t* x_scales, epxHandle_t handle,
                                           const epxDispatchConfig_t* config,
                                           epxDispatchResult_t* result);
typedef struct {
  epxTensor_t x;            /* [M,H]: rows by source rank, then source token */
  epxTensor_t x_scales;     /* [M,H/128] f32 when x is e4m3, else absent */
  epxTensor_t topk_idx;     /* [M,K] i64: local expert ids, -1 where the expert is elsewhere */
  epxTensor_t topk_weights; /* [M,K] f32: 0 where topk_idx is -1 */
  epxTensor_t num_recv_tokens_per_expert; /* [E_local] i32, rounded to expert_alignment */
} epxDispatchOutputs_t;
/* Views into the buffer's receive space, valid until the result is destroyed. */
EPX_C_EXPORT epxResult_t epxDispatchResultGetOutputs(epxDispatchResult_t result,
                                                     epxDispatchOutputs_t* outputs);
/* A new reference to the result's handle (destroy it with epxHandleDestroy);
 * it may outlive the result, which frees the received rows sooner. */
EPX_C_EXPORT epxResult_t epxDispatchResultGetHandle(epxDispatchResult_t result,
                                                    epxHandle_t* handle);
EPX_C_EXPORT epxResult_t epxDispatchResultDestroy(epxDispatchResult_t result);
/* T (tokens this rank dispatched) and M (rows it received); either may be NULL. */
EPX_C_EXPORT epxResult_t epxHandleGetCounts(epxHandle_t handle, int64_t* num_tokens,
                                            int64_t* num_recv_tokens);
EPX_C_EXPORT epxResult_t epxHandleDestroy(epxHandle_t handle);

typedef struct {
  size_t size;                 /* sizeof(epxCombineConfig_t) */
  unsigned int version;        /* EPX_C_API_VERSION */
  int partials_in_input_dtype; /* across nodes: partial sums cross in y's dtype, not f32 */
} epxCombineConfig_t;
#define EPX_COMBINE_CONFIG_INIT \
  { sizeof(epxCombineConfig_t), EPX_C_API_VERSION, 0 }

/* Collective. y: f32/bf16 [M,H'], one row per received row of `handle`.
 * Writes out (caller memory, y's dtype, [T,H']): row t is the unweighted sum
 * of the rows sent back for token t, in f32, over nodes ascending of the
 * node's sum over its ranks ascending (comm.hpp states it exactly); zeros
 * for tokens that went nowhere. config NULL: EPX_COMBINE_CONFIG_INIT. */
EPX_C_EXPORT epxResult_t epxCombine(epxBuffer_t buffer, const epxTensor_t* y, epxHandle_t handle,
                                    const epxCombineConfig_t* config, const epxTensor_t* out);

/* ---- Low-latency mode (a Buffer made with config.low_latency) ---- */

typedef struct {
  size_t size;          /* sizeof(epxLowLatencyConfig_t) */
  unsigned int version; /* EPX_C_API_VERSION */
  int fp8;              /* dispatch: e4m3 payload with per-token 1x128 f32 scales */
  int ue8m0;            /* with fp8: scales rounded up to powers of two */
  int return_recv_hook; /* only issue the sends; epxHookWait finishes the call */
} epxLowLatencyConfig_t;
#define EPX_LOW_LATENCY_CONFIG_INIT \
  { sizeof(epxLowLatencyConfig_t), EPX_C_API_VERSION, 1, 0, 0 }

/* Collective. x: f32/bf16 [T,H], T <= max_tokens_per_rank; topk_idx i64
 * [T,K]. With return_recv_hook, *hook must be waited on (epxHookWait) before
 * the outputs are read; without, *hook is set to NULL (hook may be NULL).
 * Two results may be held at a time; a third dispatch while both are held
 * fails. config NULL: EPX_LOW_LATENCY_CONFIG_INIT. */
EPX_C_EXPORT epxResult_t epxLowLatencyDispatch(epxBuffer_t buffer, const epxTensor_t* x,
                                               const epxTensor_t* topk_idx,
                                               const epxLowLatencyConfig_t* config,
                                               epxLowLatencyResult_t* result, epxHook_t* hook);
typedef struct {
  epxTensor_t x;        /* [E_local, R*max_tokens_per_rank, H]: e4m3 with fp8, else x's dtype */
  epxTensor_t x_scales; /* [E_local, R*max_tokens_per_rank, H/128] f32 with fp8, else absent */
  epxTensor_t count; /* [E_local] i32: valid rows per local expert (by source rank, then token) */
} epxLowLatencyOutputs_t;
EPX_C_EXPORT epxResult_t epxLowLatencyResultGetOutputs(epxLowLatencyResult_t result,
                                                       epxLowLatencyOutputs_t* outputs);
/* A new reference to the result's handle (destroy with epxLowLatencyHandleDestroy). */
EPX_C_EXPORT epxResult_t epxLowLatencyResultGetHandle(epxLowLatencyResult_t result,
                                                      epxLowLatencyHandle_t* handle);
EPX_C_EXPORT epxResult_t epxLowLatencyResultDestroy(epxLowLatencyResult_t result);
EPX_C_EXPORT epxResult_t epxLowLatencyHandleDestroy(epxLowLatencyHandle_t handle);

/* Collective. y: [E_local, R*max_tokens_per_rank, H] f32/bf16, the expert
 * outputs in the dispatch layout; topk_idx/topk_weights as given to that
 * dispatch. Writes out (caller memory, y's dtype, [T,H]): per token the sum
 * over its valid top-k entries, in k order with f32 accumulation, of
 * weight * expert output. With return_recv_hook, out is written by
 * epxHookWait (keep it alive until then). */
EPX_C_EXPORT epxResult_t epxLowLatencyCombine(epxBuffer_t buffer, const epxTensor_t* y,
                                              const epxTensor_t* topk_idx,
                                              const epxTensor_t* topk_weights,
                                              epxLowLatencyHandle_t handle,
                                              const epxLowLatencyConfig_t* config,
                                              const epxTensor_t* out, epxHook_t* hook);

/* Waits for the call's data, finishes it and destroys the hook (also when it
 * fails). */
EPX_C_EXPORT epxResult_t epxHookWait(epxHook_t hook);
/* Destroys a hook that will not be waited on. */
EPX_C_EXPORT epxResult_t epxHookDestroy(epxHook_t hook);

#ifdef __cplusplus
}
#endif

#endif /* EPX_EPX_H */
