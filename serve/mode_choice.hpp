// The decode mode per batch size (epx-serve --decode-mode auto): at start-up
// every rank times the expert all-to-all of a decode step both ways, the
// Buffer's normal-mode dispatch + combine (the rows and the K column blocks
// that serve::Forward sends) and its low-latency dispatch + combine, on
// random rows and routing of the model's shape, with the dispatch payload
// that serve::Forward sends (f32, or e4m3 plus scales, dequantised after,
// with fp8); each batch size then takes the faster one.
#pragma once

#include <string>
#include <vector>

#include <epx/comm.hpp>

#include "model/model_config.hpp"
#include "serve/control.hpp"

namespace epx::serve {

struct DecodeModeChoice {
  std::vector<int> batches;      // decode batch sizes measured (all ranks' sequences)
  std::vector<double> normal_s;  // per batch: the slowest rank's median, seconds
  std::vector<double> low_latency_s;
  bool fp8 = false;  // measured with fp8 dispatch
  // Whether a decode step of `batch` sequences takes the low-latency path:
  // that of the smallest measured batch >= it (the largest past them all).
  bool low_latency(int batch) const;
  std::string describe() const;  // one line for the log
};

// Collective over the buffer's group (a low-latency Buffer holding
// max_batch tokens per rank): batch sizes 1, 2, 4, ... up to max_batch,
// each rank sending ceil(batch / ranks) tokens, `iters` timed runs per
// mode after one untimed. Every rank gets rank 0's result.
// With fp8 (every rank the same) both modes are timed with fp8 dispatch.
DecodeModeChoice choose_decode_modes(comm::Buffer& buffer, Control& control,
                                     const model::ModelConfig& c, int max_batch, bool fp8 = false,
                                     int iters = 5);

}  // namespace epx::serve
