// Everything public in epx.
#pragma once

#include <epx/config.hpp>
#include <epx/error.hpp>
#include <epx/tensor.hpp>
#include <epx/group.hpp>
#include <epx/kernels.hpp>
#include <epx/comm.hpp>
#include <epx/balancer.hpp>
#include <epx/pipeline.hpp>
