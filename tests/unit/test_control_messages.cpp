// The control plane's wire layout (comm/control_messages.hpp): every payload
// fits a Message and travels as bytes, and each comes back field for field
// after a trip through the message bytes, as Control::exchange moves them.
#include <gtest/gtest.h>

#include <cstring>
#include <type_traits>
#include <vector>

#include "comm/control_messages.hpp"

namespace epx::comm {
namespace {

template <class T>
constexpr bool travels_in_a_message() {
  return IsControlPayload<T>::value && std::is_trivially_copyable_v<T> &&
         std::is_standard_layout_v<T> && sizeof(T) <= kPayloadBytes && alignof(T) <= kPayloadAlign;
}
static_assert(travels_in_a_message<DispatchRequest>());
static_assert(travels_in_a_message<DispatchReply>());
static_assert(travels_in_a_message<CombineRequest>());
static_assert(travels_in_a_message<LowLatencyDispatchRequest>());
static_assert(travels_in_a_message<LowLatencyCombineRequest>());
static_assert(!IsControlPayload<int>::value && !IsControlPayload<ReceiveBlock>::value,
              "only the registered payload structs are payloads");
static_assert(sizeof(Message) == 512);
static_assert(sizeof(CombineRequest) == kPayloadBytes, "combine's request fills the payload area");
static_assert(offsetof(Message, payload) + kPayloadBytes == offsetof(Message, text));
static_assert(offsetof(Message, text) + kTextBytes == sizeof(Message));

// What the wire does: the bytes of `m` into another Message.
Message through_the_wire(const Message& m) {
  std::vector<std::byte> wire(sizeof(Message));
  std::memcpy(wire.data(), &m, sizeof(Message));
  Message in;
  std::memcpy(&in, wire.data(), sizeof(Message));
  return in;
}

// A message with header, block and text set around the payload, which must
// leave each other alone.
Message stamped() {
  Message m;
  m.seq = 77;
  m.op = 4;
  m.failed = 0;
  m.block = {3, 4096, 1};
  return m;
}

void expect_frame(const Message& in) {
  EXPECT_EQ(in.seq, 77u);
  EXPECT_EQ(in.op, 4u);
  EXPECT_EQ(in.failed, 0);
  EXPECT_EQ(in.block.region, 3);
  EXPECT_EQ(in.block.offset, 4096);
  EXPECT_EQ(in.block.grow, 1);
  EXPECT_EQ(in.text[0], '\0');
}

TEST(ControlMessages, DefaultPayloadsReadZero) {
  const Message m;
  EXPECT_EQ(m.as<DispatchRequest>().rows, 0);
  EXPECT_EQ(m.as<DispatchRequest>().batch_rows, 0);
  EXPECT_EQ(m.as<CombineRequest>().partial_dtype, 0);
  EXPECT_EQ(m.block.region, 0);
  for (std::byte b : m.payload) EXPECT_EQ(b, std::byte{0});
}

TEST(ControlMessages, DispatchRequestRoundTrip) {
  Message m = stamped();
  DispatchRequest& v = m.as<DispatchRequest>();
  v = {11, 7168, 5, 8, 256, 56, 1234567890123, 1, 99};
  const Message in = through_the_wire(m);
  expect_frame(in);
  const DispatchRequest& r = in.as<DispatchRequest>();
  EXPECT_EQ(r.rows, 11);
  EXPECT_EQ(r.hidden, 7168);
  EXPECT_EQ(r.dtype, 5);
  EXPECT_EQ(r.topk, 8);
  EXPECT_EQ(r.experts, 256);
  EXPECT_EQ(r.scales, 56);
  EXPECT_EQ(r.handle, 1234567890123);
  EXPECT_EQ(r.ue8m0, 1);
  EXPECT_EQ(r.batch_rows, 99);
}

TEST(ControlMessages, DispatchReplyRoundTrip) {
  Message m = stamped();
  m.as<DispatchReply>() = {-5, 1 << 30, std::int64_t{1} << 40};
  const Message in = through_the_wire(m);
  expect_frame(in);
  EXPECT_EQ(in.as<DispatchReply>().first_row, -5);
  EXPECT_EQ(in.as<DispatchReply>().rows, 1 << 30);
  EXPECT_EQ(in.as<DispatchReply>().batch_at, std::int64_t{1} << 40);
}

TEST(ControlMessages, CombineRequestRoundTrip) {
  Message m = stamped();
  m.as<CombineRequest>() = {1, 2, 3, 4, -1, 6, 7, 1, 9, 10, 11};
  const Message in = through_the_wire(m);
  expect_frame(in);
  const CombineRequest& r = in.as<CombineRequest>();
  EXPECT_EQ(r.back, 1);
  EXPECT_EQ(r.hidden, 2);
  EXPECT_EQ(r.dtype, 3);
  EXPECT_EQ(r.handle, 4);
  EXPECT_EQ(r.y_region, -1);
  EXPECT_EQ(r.y_offset, 6);
  EXPECT_EQ(r.y_row, 7);
  EXPECT_EQ(r.can_load, 1);
  EXPECT_EQ(r.forward, 9);
  EXPECT_EQ(r.partials, 10);
  EXPECT_EQ(r.partial_dtype, 11);
}

TEST(ControlMessages, LowLatencyRequestsRoundTrip) {
  Message d = stamped();
  d.as<LowLatencyDispatchRequest>() = {3, 2048, 1, 1};
  const Message in_d = through_the_wire(d);
  expect_frame(in_d);
  EXPECT_EQ(in_d.as<LowLatencyDispatchRequest>().wire, 3);
  EXPECT_EQ(in_d.as<LowLatencyDispatchRequest>().hidden, 2048);
  EXPECT_EQ(in_d.as<LowLatencyDispatchRequest>().ue8m0, 1);
  EXPECT_EQ(in_d.as<LowLatencyDispatchRequest>().half, 1);

  Message c = stamped();
  c.as<LowLatencyCombineRequest>() = {2, 41};
  const Message in_c = through_the_wire(c);
  expect_frame(in_c);
  EXPECT_EQ(in_c.as<LowLatencyCombineRequest>().dtype, 2);
  EXPECT_EQ(in_c.as<LowLatencyCombineRequest>().dispatch, 41);
}

TEST(ControlMessages, ErrorTextLeavesThePayloadAlone) {
  Message m = stamped();
  m.as<CombineRequest>() = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
  m.failed = 1;
  std::memset(m.text, 'x', kTextBytes - 1);
  m.text[kTextBytes - 1] = '\0';
  const Message in = through_the_wire(m);
  EXPECT_EQ(in.failed, 1);
  EXPECT_EQ(std::strlen(in.text), kTextBytes - 1);
  EXPECT_EQ(in.as<CombineRequest>().back, 1);
  EXPECT_EQ(in.as<CombineRequest>().partial_dtype, 11);
  EXPECT_EQ(in.block.grow, 1);
}

}  // namespace
}  // namespace epx::comm
