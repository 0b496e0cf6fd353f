// The parameter registry: defaults, environment values, bad values.
#include <gtest/gtest.h>

#include <cstdlib>
#include <sstream>

#include <epx/error.hpp>

#include "core/config.hpp"

namespace epx::core {
namespace {

TEST(Config, EnvironmentOverridesDefaultAndIsReported) {
  setenv("EPX_TEST_INT", "17", 1);
  Param<int> p("EPX_TEST_INT", 3, "a test parameter");
  EXPECT_EQ(p.get(), 17);
  EXPECT_TRUE(p.from_env());
  ParamInfo info = p.info();
  EXPECT_EQ(info.value, "17");
  EXPECT_EQ(info.default_value, "3");
  unsetenv("EPX_TEST_INT");
}

TEST(Config, DefaultWhenUnset) {
  unsetenv("EPX_TEST_DOUBLE");
  Param<double> p("EPX_TEST_DOUBLE", 2.5, "a test parameter");
  EXPECT_EQ(p.get(), 2.5);
  EXPECT_FALSE(p.from_env());
}

TEST(Config, BadValueNamesTheVariable) {
  setenv("EPX_TEST_BOOL", "maybe", 1);
  Param<bool> p("EPX_TEST_BOOL", false, "a test parameter");
  try {
    p.get();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("EPX_TEST_BOOL=maybe"), std::string::npos) << e.what();
  }
  unsetenv("EPX_TEST_BOOL");
}

TEST(Config, PrintListsEveryBuiltInParameter) {
  std::ostringstream os;
  print_params(os);
  for (const char* name : {"EPX_TIMEOUT_S", "EPX_RANKS_PER_NODE", "EPX_LOG_LEVEL", "EPX_LOG_SUBSYS",
                           "EPX_LOG_FILE", "EPX_SHM_DIRECT"})
    EXPECT_NE(os.str().find(name), std::string::npos) << name << " missing from\n" << os.str();
}

}  // namespace
}  // namespace epx::core
