#include "serve/text.hpp"

#include <algorithm>

namespace epx::serve {

namespace {

constexpr const char* kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Length of the sequence a lead byte starts (0: not a lead byte), and the
// range of its second byte (Unicode Table 3-7: no overlongs, surrogates or
// code points past U+10FFFF).
int sequence_length(unsigned char b, unsigned char& lo, unsigned char& hi) {
  lo = 0x80;
  hi = 0xBF;
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) return 2;
  if (b >= 0xE0 && b <= 0xEF) {
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;
    return 3;
  }
  if (b >= 0xF0 && b <= 0xF4) {
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;
    return 4;
  }
  return 0;
}

// Decodes `in` from the start onto `out`. Returns how many bytes were
// consumed: all of them, or (when !final) all but an incomplete sequence at
// the end, which may still become valid.
std::size_t decode_into(const std::string& in, std::string& out, bool final) {
  std::size_t i = 0;
  while (i < in.size()) {
    const auto b = static_cast<unsigned char>(in[i]);
    unsigned char lo, hi;
    const int n = sequence_length(b, lo, hi);
    if (n == 0) {
      out += kReplacement;
      ++i;
      continue;
    }
    std::size_t j = 1;
    bool bad = false;
    while (static_cast<int>(j) < n && i + j < in.size()) {
      const auto c = static_cast<unsigned char>(in[i + j]);
      const bool ok = j == 1 ? (c >= lo && c <= hi) : (c >= 0x80 && c <= 0xBF);
      if (!ok) {
        bad = true;
        break;
      }
      ++j;
    }
    if (bad) {  // the maximal subpart [i, i + j) becomes one U+FFFD
      out += kReplacement;
      i += j;
    } else if (static_cast<int>(j) < n) {  // the input ends inside the sequence
      if (!final) return i;
      out += kReplacement;
      i += j;
    } else {
      out.append(in, i, j);
      i += j;
    }
  }
  return i;
}

}  // namespace

std::string utf8_decode(const std::string& bytes) {
  std::string out;
  decode_into(bytes, out, true);
  return out;
}

CompletionText::CompletionText(std::vector<std::string> stop) : stop_(std::move(stop)) {
  for (const std::string& s : stop_) longest_stop_ = std::max(longest_stop_, s.size());
}

void CompletionText::decode(bool final) {
  const std::size_t used = decode_into(pending_, text_, final);
  pending_.erase(0, used);
  // The earliest stop string in the text, if any.
  std::size_t cut = std::string::npos;
  for (const std::string& s : stop_) cut = std::min(cut, text_.find(s));
  if (cut != std::string::npos) {
    text_.resize(cut);
    stopped_ = true;
  }
}

bool CompletionText::add(std::uint8_t byte) {
  if (stopped_ || finished_) return stopped_;
  pending_.push_back(static_cast<char>(byte));
  decode(false);
  return stopped_;
}

void CompletionText::finish() {
  if (!stopped_) decode(true);
  finished_ = true;
}

std::string CompletionText::take_delta() {
  std::size_t end = text_.size();
  if (!stopped_ && !finished_) {
    // A stop string completed later starts at most longest - 1 bytes back.
    end = longest_stop_ > 0 ? (end >= longest_stop_ - 1 ? end - (longest_stop_ - 1) : 0) : end;
    while (end > emitted_ && (static_cast<unsigned char>(text_[end]) & 0xC0) == 0x80) --end;
  }
  if (end <= emitted_) return {};
  std::string d = text_.substr(emitted_, end - emitted_);
  emitted_ = end;
  return d;
}

}  // namespace epx::serve
