// epx::Error: the code, the message, and whether the raising object is poisoned.
#include <gtest/gtest.h>

#include <exception>

#include <epx/error.hpp>

#include "core/check.hpp"

namespace epx {
namespace {

TEST(Error, PoisonedByDefaultOnlyForTimeoutAndPeerFailure) {
  for (ErrorCode c : {ErrorCode::InvalidArgument, ErrorCode::OutOfMemory, ErrorCode::Unsupported,
                      ErrorCode::Internal})
    EXPECT_FALSE(Error(c, "x").poisoned()) << to_string(c);
  for (ErrorCode c : {ErrorCode::Timeout, ErrorCode::PeerFailure})
    EXPECT_TRUE(Error(c, "x").poisoned()) << to_string(c);
}

TEST(Error, ExplicitPoisonKeepsCodeAndMessageAndSurvivesCopies) {
  const Error e(ErrorCode::InvalidArgument, "calls drifted", true);
  EXPECT_TRUE(e.poisoned());
  const Error copy = e;
  EXPECT_TRUE(copy.poisoned());
  EXPECT_EQ(copy.code(), ErrorCode::InvalidArgument);
  EXPECT_STREQ(copy.what(), "calls drifted");
  EXPECT_FALSE(Error(ErrorCode::Timeout, "agreed", false).poisoned());
}

TEST(Error, RethrowPoisonedMarksEpxErrorsAndPassesOthers) {
  try {
    core::rethrow_poisoned(std::make_exception_ptr(Error(ErrorCode::InvalidArgument, "bad")));
  } catch (const Error& e) {
    EXPECT_TRUE(e.poisoned());
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_STREQ(e.what(), "bad");
  }
  EXPECT_THROW(core::rethrow_poisoned(std::make_exception_ptr(std::logic_error("other"))),
               std::logic_error);
}

TEST(Error, ChecksRaiseUnpoisonedInvalidArgument) {
  try {
    EPX_CHECK_EQ(1, 2, InvalidArgument, "op: a");
    ADD_FAILURE() << "EPX_CHECK_EQ(1, 2) did not throw";
  } catch (const Error& e) {
    EXPECT_FALSE(e.poisoned());
    EXPECT_NE(std::string(e.what()).find("op: a"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace epx
