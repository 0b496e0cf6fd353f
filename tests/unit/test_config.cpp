// The parameter registry: defaults, environment values, bad values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
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

TEST(Config, ParamLeavesTheRegistryWhenDestroyed) {
  auto listed = [] {
    for (const ParamInfo& p : list_params())
      if (p.env == "EPX_TEST_SCOPED") return true;
    return false;
  };
  {
    Param<int> p("EPX_TEST_SCOPED", 1, "a parameter on the stack");
    EXPECT_TRUE(listed());
  }
  EXPECT_FALSE(listed());  // and print_params does not read a dead Param
  std::ostringstream os;
  print_params(os);
  EXPECT_EQ(os.str().find("EPX_TEST_SCOPED"), std::string::npos);
}

TEST(Config, CheckRefusesValuesThatParse) {
  for (const char* bad : {"-1", "0", "nan"}) {
    setenv("EPX_TEST_SECONDS", bad, 1);
    Param<double> p("EPX_TEST_SECONDS", 5.0, "a test timeout",
                    {[](const double& v) { return v > 0; }, "a number of seconds > 0"});
    try {
      p.get();
      ADD_FAILURE() << bad << ": no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
      EXPECT_NE(std::string(e.what()).find(std::string("EPX_TEST_SECONDS=") + bad +
                                           ": expected a number of seconds > 0"),
                std::string::npos)
          << e.what();
    }
  }
  setenv("EPX_TEST_SECONDS", "inf", 1);
  Param<double> p("EPX_TEST_SECONDS", 5.0, "a test timeout",
                  {[](const double& v) { return v > 0; }, "a number of seconds > 0"});
  EXPECT_EQ(p.get(), std::numeric_limits<double>::infinity());
  unsetenv("EPX_TEST_SECONDS");
}

TEST(Config, TimeoutConvention) {
  EXPECT_EQ(resolve_timeout_s(7, "x.timeout_s"), 7);
  EXPECT_EQ(resolve_timeout_s(0, "x.timeout_s"), params::timeout_s.get());  // 0: unset
  for (double bad : {-1.0, std::nan("")}) {
    try {
      resolve_timeout_s(bad, "x.timeout_s");
      ADD_FAILURE() << bad << ": no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("x.timeout_s = "), std::string::npos) << e.what();
    }
    EXPECT_EQ(agreement_timeout_s(bad), params::timeout_s.default_value());
  }
}

TEST(Config, PrintListsEveryBuiltInParameter) {
  std::ostringstream os;
  print_params(os);
  for (const char* name :
       {"EPX_TIMEOUT_S", "EPX_RANKS_PER_NODE", "EPX_LOG_LEVEL", "EPX_LOG_SUBSYS", "EPX_LOG_FILE",
        "EPX_SHM_DIRECT", "EPX_MPI_TRANSPORT", "EPX_INTERNODE_TRANSPORT"})
    EXPECT_NE(os.str().find(name), std::string::npos) << name << " missing from\n" << os.str();
}

}  // namespace
}  // namespace epx::core
