// serve/text.hpp: UTF-8 decoding with replacement, and the pieces handed
// out while tokens arrive, which must always concatenate to the final text.
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "serve/text.hpp"

using epx::serve::CompletionText;
using epx::serve::utf8_decode;

namespace {

const std::string kFffd = "\xEF\xBF\xBD";

// Feeds `bytes` one at a time, collecting take_delta() after each; returns the pieces'
// concatenation.
std::string streamed(CompletionText& t, const std::string& bytes, bool finish = true) {
  std::string out;
  for (const char c : bytes) {
    if (t.add(static_cast<std::uint8_t>(c))) break;
    out += t.take_delta();
  }
  if (finish) t.finish();
  return out + t.take_delta();
}

}  // namespace

TEST(ServeText, ValidUtf8IsUnchanged) {
  const std::string s = "plain, \xC3\xA9t\xC3\xA9, \xE2\x82\xAC, \xF0\x9F\x98\x80";
  EXPECT_EQ(utf8_decode(s), s);
}

TEST(ServeText, MaximalSubpartsBecomeOneReplacementEach) {
  // Unicode's examples (Table 3-8 style): a lone continuation, a truncated
  // 3-byte sequence, an overlong, a surrogate, a byte never valid, past U+10FFFF.
  EXPECT_EQ(utf8_decode("a\x80"
                        "b"),
            "a" + kFffd + "b");
  EXPECT_EQ(utf8_decode("\xE2\x82"
                        "b"),
            kFffd + "b");
  EXPECT_EQ(utf8_decode("\xC0\xAF"), kFffd + kFffd);
  EXPECT_EQ(utf8_decode("\xED\xA0\x80"), kFffd + kFffd + kFffd);
  EXPECT_EQ(utf8_decode("\xFF"), kFffd);
  EXPECT_EQ(utf8_decode("\xF4\x90\x80\x80"), kFffd + kFffd + kFffd + kFffd);
  EXPECT_EQ(utf8_decode("\xF0\x9F\x98"), kFffd);  // truncated at the end of input
}

TEST(ServeText, PiecesConcatenateToTheWholeDecodeOnRandomBytes) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 300; ++trial) {
    std::string bytes;
    const int n = static_cast<int>(rng() % 40);
    for (int i = 0; i < n; ++i) {
      // Mostly bytes that form or break multi-byte sequences.
      const unsigned pick = rng() % 4;
      bytes.push_back(static_cast<char>(pick == 0 ? rng() % 128 : 0x80 + rng() % 128));
    }
    CompletionText t;
    EXPECT_EQ(streamed(t, bytes), utf8_decode(bytes)) << "trial " << trial;
    EXPECT_EQ(t.text(), utf8_decode(bytes));
  }
}

TEST(ServeText, AnIncompleteSequenceWaitsForItsNextByte) {
  CompletionText t;
  t.add(0xE2);
  t.add(0x82);
  EXPECT_EQ(t.take_delta(), "");
  t.add(0xAC);
  EXPECT_EQ(t.take_delta(), "\xE2\x82\xAC");
}

TEST(ServeText, StopCutsBeforeTheFirstStopStringAndNeverStreamsIt) {
  CompletionText t({"END", "xyz"});
  const std::string out = streamed(t, "abc xy ENxyzEND more", false);
  EXPECT_TRUE(t.stopped());
  EXPECT_EQ(t.text(), "abc xy EN");
  EXPECT_EQ(out, "abc xy EN");
}

TEST(ServeText, StopAcrossAMultiByteCharacter) {
  CompletionText t({"\xC3\xA9!"});
  const std::string out = streamed(t, "caf\xC3\xA9!x", false);
  EXPECT_TRUE(t.stopped());
  EXPECT_EQ(out, "caf");
}

TEST(ServeText, WithoutAStopEverythingComesOutAtTheEnd) {
  CompletionText t({"never"});
  const std::string out = streamed(t, "a long text without it");
  EXPECT_FALSE(t.stopped());
  EXPECT_EQ(out, "a long text without it");
}

TEST(ServeText, HeldBackBytesStayOnCharacterBoundaries) {
  // Every piece handed out must be valid UTF-8 on its own (it goes into JSON).
  CompletionText t({"abcd"});
  const std::string s = "\xC3\xA9\xE2\x82\xAC\xC3\xA9\xC3\xA9";
  for (const char c : s) {
    t.add(static_cast<std::uint8_t>(c));
    const std::string piece = t.take_delta();
    EXPECT_EQ(utf8_decode(piece), piece);
  }
}
