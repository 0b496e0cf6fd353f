// Low-latency mode: fixed buffers registered once and double-buffered. Each
// token goes once to every rank holding one of its experts, into a fixed
// slot: slot i of source s, i counting s's tokens for that rank in token
// order, with a bit mask of the rank's local experts it is for. No count
// exchange precedes the data; the receiver learns the counts from headers
// that arrive with it and lays each expert's rows out in (source, token)
// order, so the order never depends on timing. (Sending per (token, rank)
// rather than per (token, expert) pair moves K/ranks-hit times fewer bytes
// between processes; the per-expert copies are local.) Every call still begins with one all-to-all round of the control
// plane, which carries the ranks' verdicts on their inputs and tells each
// sender that the receiver's buffer half is free (the previous results in it
// were released), so nothing is ever overwritten while in use.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include <epx/comm.hpp>

#include "comm/transport/fabric.hpp"

namespace epx::comm {

// Byte offsets inside one rank's low-latency region.
struct LowLatencyLayout {
  int ranks = 1, experts = 1, local_experts = 1, max_tokens = 0;
  std::int64_t hidden = 0, num_scales = 0;  // scales per row (H/128, rounded up)
  int mask_words = 1;               // u64 words of local-expert bits per received row
  std::size_t dispatch_rows = 0;    // per half: x, [E_local][R*M] rows of up to 4*H bytes
  std::size_t dispatch_scales = 0;  // per half: [E_local][R*M][S] f32
  std::size_t recv_rows = 0;        // per half: [R][M] rows as sent, up to 4*H bytes
  std::size_t recv_scales = 0;      // per half: [R][M][S] f32
  std::size_t recv_masks = 0;       // per half: [R][M][mask_words] u64
  std::size_t headers = 0;          // per half: [R] i32 rows sent by each source
  std::size_t combine_rows = 0;     // per half: [E][M] rows of up to 4*H bytes
  std::size_t half = 0;             // bytes of one half
  std::size_t signals = 0;          // offset of [2][R] u64: dispatch / combine arrivals
  std::size_t total = 0;

  LowLatencyLayout(int max_tokens, std::int64_t hidden, int ranks, int experts);
  std::size_t dispatch_rows_at(int half_index) const { return half_index * half; }
  std::size_t dispatch_scales_at(int h) const { return h * half + dispatch_rows; }
  std::size_t recv_rows_at(int h) const { return h * half + dispatch_rows + dispatch_scales; }
  std::size_t recv_scales_at(int h) const { return recv_rows_at(h) + recv_rows; }
  std::size_t recv_masks_at(int h) const { return recv_scales_at(h) + recv_scales; }
  std::size_t headers_at(int h) const { return recv_masks_at(h) + recv_masks; }
  std::size_t combine_rows_at(int h) const { return headers_at(h) + headers; }
  std::size_t dispatch_arrival(int source) const { return signals + 8 * std::size_t(source); }
  std::size_t combine_arrival(int source) const {
    return signals + 8 * std::size_t(ranks + source);
  }
};

// The buffers and bookkeeping of a low-latency Buffer, shared with the hooks
// that results carry (a hook may run after other calls).
struct LowLatencyState {
  LowLatencyState(transport::Fabric& fabric, const LowLatencyLayout& layout,
                  transport::RegionId region)
      : fabric(fabric),
        layout(layout),
        region(region),
        memory(fabric.local(region)),
        base(memory.get()) {}

  transport::Fabric& fabric;  // valid while buffer_alive
  LowLatencyLayout layout;
  transport::RegionId region;
  std::shared_ptr<std::byte> memory;  // keeps the region mapped for results and hooks
  std::byte* base;
  bool buffer_alive = true;  // cleared by ~Buffer: a late hook then fails cleanly

  std::uint64_t dispatches = 0, combines = 0;  // calls made so far
  // Per half: the call whose data lands there, whether it was finished (waited
  // for and compacted), and the owner of the result tensors viewing it.
  struct Half {
    std::uint64_t call = 0;
    bool finished = true;
    std::weak_ptr<void> results;
  };
  Half dispatch_half[2], combine_half[2];
};

// A low-latency dispatch whose data may still be arriving. finish() waits for
// every source, compacts each expert's rows in source order and fills count;
// it runs once (the hook, combine or the next use of the half call it).
struct PendingLowLatencyDispatch {
  std::shared_ptr<LowLatencyState> state;
  std::uint64_t call = 0;
  int half = 0;
  std::size_t row_bytes = 0;
  bool scales = false;
  // The result's owner (memory of count; while held, the half is busy). Weak:
  // a handle alone must not keep the half busy.
  std::weak_ptr<void> results;
  std::int32_t* count = nullptr;  // [E_local], inside the owner
  double timeout_s = 0;
  bool done = false;
  // Rows [first[e*(R+1)+s], first[e*(R+1)+s+1]) of local expert e came from rank s.
  std::vector<std::int32_t> first;

  void finish();
};

// Waits until every source's signal at `offset_of(source)` reaches `call`.
void wait_for_sources(LowLatencyState& st, std::size_t (LowLatencyLayout::*offset_of)(int) const,
                      std::uint64_t call, const core::Deadline& deadline, const char* what);

}  // namespace epx::comm
