#include "comm/arena.hpp"

#include <algorithm>

#include <epx/group.hpp>

#include "core/check.hpp"
#include "core/log.hpp"

namespace epx::comm {

// First-fit free list over one region; shared with the leases it hands out.
struct Arena::Segment {
  transport::RegionId id;
  std::shared_ptr<std::byte> memory;
  std::size_t size;
  std::mutex mutex;
  std::map<std::size_t, std::size_t> free;  // offset -> bytes, coalesced

  std::optional<std::size_t> take(std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex);
    for (auto it = free.begin(); it != free.end(); ++it) {
      if (it->second < bytes) continue;
      const std::size_t off = it->first, left = it->second - bytes;
      free.erase(it);
      if (left) free.emplace(off + bytes, left);
      return off;
    }
    return std::nullopt;
  }

  void give_back(std::size_t off, std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = free.emplace(off, bytes).first;
    auto next = std::next(it);
    if (next != free.end() && it->first + it->second == next->first) {
      it->second += next->second;
      free.erase(next);
    }
    if (it != free.begin()) {
      auto prev = std::prev(it);
      if (prev->first + prev->second == it->first) {
        prev->second += it->second;
        free.erase(it);
      }
    }
  }
};

namespace {
std::size_t round_up(std::size_t n) { return (n + Arena::kAlign - 1) / Arena::kAlign * Arena::kAlign; }
}  // namespace

Arena::Arena(transport::Fabric& fabric, std::size_t bytes, const core::Deadline& deadline)
    : fabric_(fabric) {
  grow(std::max<std::size_t>(bytes, kAlign), deadline);
}

std::optional<Arena::Block> Arena::try_allocate(std::size_t bytes) {
  const std::size_t need = round_up(std::max<std::size_t>(bytes, 1));
  // Newest segments first: they are the large ones.
  for (auto it = segments_.rbegin(); it != segments_.rend(); ++it) {
    std::shared_ptr<Segment> seg = *it;
    if (auto off = seg->take(need)) {
      Block b;
      b.region = seg->id;
      b.offset = *off;
      b.bytes = need;
      b.ptr = seg->memory.get() + *off;
      b.lease = std::shared_ptr<void>(b.ptr, [seg, off = *off, need](void*) { seg->give_back(off, need); });
      return b;
    }
  }
  return std::nullopt;
}

void Arena::grow(std::size_t need, const core::Deadline& deadline) {
  // Ranks that need nothing still take part (region creation is collective)
  // with a token region, which they do not use.
  if (need == 0) {
    fabric_.create_region(kAlign, deadline);
    return;
  }
  std::size_t bytes = round_up(need);
  if (!segments_.empty()) {
    std::size_t largest = 0;
    for (const auto& s : segments_) largest = std::max(largest, s->size);
    bytes = std::max(bytes, 2 * largest);  // doubling: creeping demand grows rarely
    EPX_LOG(Warn, Comm, "receive space grows by ", bytes, " bytes to ", capacity() + bytes,
            " (a call needed ", need, " bytes); raise BufferOptions::num_bytes to avoid this");
  }
  const transport::RegionId id = fabric_.create_region(bytes, deadline);
  auto seg = std::make_shared<Segment>();
  seg->id = id;
  seg->memory = fabric_.local(id);
  seg->size = bytes;
  seg->free.emplace(0, bytes);
  segments_.push_back(std::move(seg));
}

std::optional<Arena::Location> Arena::locate(const void* p, std::size_t bytes) const {
  const auto* b = static_cast<const std::byte*>(p);
  for (const auto& s : segments_) {
    const std::byte* base = s->memory.get();
    if (b >= base && b + bytes <= base + s->size)
      return Location{s->id, static_cast<std::size_t>(b - base)};
  }
  return std::nullopt;
}

std::size_t Arena::capacity() const {
  std::size_t n = 0;
  for (auto& s : segments_) n += s->size;
  return n;
}

}  // namespace epx::comm
