// The wire layout of the control plane: one fixed-size Message per (round,
// sender, receiver), and one payload struct per (op, round) that carries
// values. This is the one place that says what a control message means;
// control.hpp moves them, the call implementations fill and read them.
//
// A Message is 512 bytes:
//   seq, op, failed   the header (16 bytes): which call, and the sender's verdict
//   block             where the sender's receive block for this call is (24
//                     bytes); Buffer::Impl::reserve() fills it on the rounds that
//                     allocate receive space, zero elsewhere
//   payload           kPayloadBytes (88) for the round's payload struct, read
//                     and written through Message::as<T>()
//   text              the sender's error when failed = 1 (else empty); only errors
//
// Payloads are plain structs of int64 fields (standard layout, trivially
// copyable, zero by default: every field a round does not fill reads 0).
// Each is registered with EPX_CONTROL_PAYLOAD, which checks at compile time
// that it fits; Message::as<T>() takes only registered payloads.
//
// Variable-length data does not go into a Message: combine's in-place read
// lists across nodes (one int64 per other node, any node count) travel in
// Control's node lists (control.hpp), sized from the group's node count.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <type_traits>

namespace epx::comm {

// Where a receiver's block for this call is: filled by reserve() on the
// rounds that allocate (dispatch reply, combine request), on every message of
// the round (and again on regrow).
struct ReceiveBlock {
  std::int64_t region = 0;  // region id of the block, -1 when the sender failed or must grow
  std::int64_t offset = 0;  // byte offset of the block in that region
  std::int64_t grow = 0;    // 1: the sender found no room; every rank grows, then regrow round
};

constexpr std::size_t kPayloadBytes = 88;
constexpr std::size_t kPayloadAlign = alignof(std::int64_t);
constexpr std::size_t kTextBytes = 384;

template <class T>
struct IsControlPayload : std::false_type {};

// Registers T as a control payload and checks that it travels as bytes and fits.
#define EPX_CONTROL_PAYLOAD(T)                                                                 \
  static_assert(std::is_trivially_copyable_v<T>, #T ": a control payload is copied as bytes"); \
  static_assert(std::is_standard_layout_v<T>, #T ": a control payload has one fixed layout");  \
  static_assert(sizeof(T) <= ::epx::comm::kPayloadBytes,                                       \
                #T " does not fit the payload area of a control Message");                     \
  static_assert(alignof(T) <= ::epx::comm::kPayloadAlign, #T " is aligned beyond 8 bytes");    \
  template <>                                                                                  \
  struct IsControlPayload<T> : std::true_type {}

// get_dispatch_layout, request round: no payload (the verdict only).

// dispatch and cached dispatch, request round: from sender s to receiver r,
// filled by request_messages() (dispatch.cpp); every rank compares the shape
// fields (check_same_payload) before any row moves.
struct DispatchRequest {
  std::int64_t rows = 0;        // rows s sends to r (receive_prefix sums them)
  std::int64_t hidden = 0;      // hidden size of the payload
  std::int64_t dtype = 0;       // DType of the rows on the wire (e4m3 with FP8)
  std::int64_t topk = 0;        // top-k entries per row
  std::int64_t experts = 0;     // number of experts
  std::int64_t scales = 0;      // FP8 scales per row (0 without FP8)
  std::int64_t handle = 0;      // cached dispatch: the call number of the handle's dispatch
  std::int64_t ue8m0 = 0;       // 1: FP8 scales rounded up to powers of two
  std::int64_t batch_rows = 0;  // hierarchical: rows of s's batch, when r forwards it
};
EPX_CONTROL_PAYLOAD(DispatchRequest);

// dispatch and cached dispatch, reply (and regrow) round: from receiver r to
// sender s, filled by reply_messages() (dispatch_rows.cpp) and, for batches,
// run_dispatch_hierarchical() (forward.cpp); the block is in Message::block.
struct DispatchReply {
  std::int64_t first_row = 0;  // where s's rows start in r's block (row index)
  std::int64_t rows = 0;       // rows of r's block in all (PayloadLayout)
  std::int64_t batch_at = 0;   // hierarchical: byte offset of s's batch in r's block
};
EPX_CONTROL_PAYLOAD(DispatchReply);

// combine, request (and regrow) round: from rank a (a holder of rows for b's
// tokens, and the owner of its own tokens) to rank b. fill_call_fields()
// (combine.cpp) fills the call's fields, combine_flat() and
// combine_hierarchical() the offsets; check_same_call() compares the call's
// fields on every rank.
struct CombineRequest {
  std::int64_t back = 0;      // flat: first row in a's block for the rows b pushes back;
                              // hierarchical: byte offset of those rows in a's block
  std::int64_t hidden = 0;    // y's hidden size
  std::int64_t dtype = 0;     // y's DType
  std::int64_t handle = 0;    // call number of the handle's dispatch
  std::int64_t y_region = 0;  // a's y in a's receive space: region, or -1
  std::int64_t y_offset = 0;  //   and byte offset there
  std::int64_t y_row = 0;     // first row of b's tokens in a's y
  std::int64_t can_load = 0;  // 1: a can load from b's memory
  std::int64_t forward = 0;   // hierarchical: bytes in a's block where b pushes rows a forwards
  std::int64_t partials = 0;  // hierarchical: bytes in a's block where b puts partial sums
  std::int64_t partial_dtype = 0;  // DType of the partial sums that cross nodes
};
EPX_CONTROL_PAYLOAD(CombineRequest);

// low_latency_dispatch, request round: from every rank to every rank, filled
// in ll_dispatch.cpp; every rank compares dtype and ue8m0.
struct LowLatencyDispatchRequest {
  std::int64_t wire = 0;    // DType of the rows on the wire
  std::int64_t hidden = 0;  // hidden size
  std::int64_t ue8m0 = 0;   // 1: FP8 scales rounded up to powers of two
  std::int64_t half = 0;    // the half of the sender's region that receives this call
};
EPX_CONTROL_PAYLOAD(LowLatencyDispatchRequest);

// low_latency_combine, request round: from every rank to every rank, filled
// and compared in ll_combine.cpp.
struct LowLatencyCombineRequest {
  std::int64_t dtype = 0;     // y's DType
  std::int64_t dispatch = 0;  // call number of the low-latency dispatch whose handle was passed
};
EPX_CONTROL_PAYLOAD(LowLatencyCombineRequest);

struct Message {
  std::uint64_t seq = 0;    // call number, equal on all ranks
  std::uint32_t op = 0;     // Op
  std::int32_t failed = 0;  // 1: the sender's input was bad; text says why
  ReceiveBlock block;       // the sender's receive block (reserve())
  alignas(kPayloadAlign) std::byte payload[kPayloadBytes] = {};  // the round's payload struct
  char text[kTextBytes] = {};                                    // the error when failed

  // The round's payload. A message carries one payload type in its round.
  template <class T>
  T& as() noexcept {
    static_assert(IsControlPayload<T>::value,
                  "not a registered control payload (control_messages.hpp)");
    return *std::launder(reinterpret_cast<T*>(payload));
  }
  template <class T>
  const T& as() const noexcept {
    static_assert(IsControlPayload<T>::value,
                  "not a registered control payload (control_messages.hpp)");
    return *std::launder(reinterpret_cast<const T*>(payload));
  }
};
static_assert(sizeof(Message) == 512, "one message is 512 bytes");
static_assert(std::is_trivially_copyable_v<Message> && std::is_standard_layout_v<Message>,
              "messages are copied as bytes");
static_assert(offsetof(Message, block) == 16 && offsetof(Message, payload) == 40 &&
                  offsetof(Message, text) == 128,
              "the header, block, payload and text sit where the comment above says");

}  // namespace epx::comm
