// The balancer's promise, checked: every replica of every expert holds the
// same bits (weights and both AdamW moments), and a migration moves bits
// without changing them. epx-train runs it when EPX_TRAIN_CHECK_REPLICAS=1
// (the balancer tests do); it costs a hash of every expert per step.
#pragma once

#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "model/model.hpp"
#include "train/exchange.hpp"

namespace epx::train {

// (MoE layer, logical expert) -> fingerprint of its weights and moments.
using ExpertFingerprints = std::map<std::pair<int, int>, std::uint64_t>;

// Collective over `world`: fingerprints every slot of every rank and throws
// Internal naming the layer, the expert and two ranks whose copies differ.
// Returns each logical expert's fingerprint.
// models: this rank's pipeline chunks (one without pp).
ExpertFingerprints check_replicas(const Comm& world,
                                  const std::vector<const model::Model*>& models);

// Throws Internal naming the first expert whose fingerprint changed
// (`what`: "migration at step 12").
void check_unchanged(const ExpertFingerprints& before, const ExpertFingerprints& after,
                     const std::string& what);

}  // namespace epx::train
