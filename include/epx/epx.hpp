// Everything public in epx.
#pragma once

#include <epx/balancer.hpp>
#include <epx/comm.hpp>
#include <epx/config.hpp>
#include <epx/error.hpp>
#include <epx/group.hpp>
#include <epx/kernels.hpp>
#include <epx/pipeline.hpp>
#include <epx/pipeline_tools.hpp>
#include <epx/tensor.hpp>
