// Checkpoints: checkpoint_dir/step-N/{model,optimizer}.safetensors and
// state.json, written by rank 0 into a temporary directory that is renamed
// into place when complete; `latest` (a one-line file naming the directory)
// is replaced last, so a crash at any moment leaves the previous checkpoint
// whole and `latest` pointing at it. Files hold logical experts under their
// HF names, so any grid resumes any checkpoint.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "core/check.hpp"
#include "core/file_io.hpp"
#include "model/safetensors.hpp"
#include "train/trainer.hpp"

namespace epx::train {

namespace fs = std::filesystem;

namespace {

constexpr int kTagValues = 7201;
constexpr int kTagExpAvg = 7202;
constexpr int kTagExpAvgSq = 7203;
constexpr const char* kFormat = "epx-train checkpoint 1";

void write_file_atomic(const fs::path& path, const std::string& text) {
  core::write_file_atomically(path.string(), {{text.data(), text.size()}}, "checkpoint");
}

Tensor slice(std::vector<float>& array, const model::ParamInfo& p) {
  return Tensor::wrap(array.data() + p.offset, p.shape, DType::f32);
}

}  // namespace

std::string Trainer::save_checkpoint() {
  const int ep = config_.parallel.ep;
  model::ParamStore& X = model_->experts;
  // Rank 0 collects the experts of EP group 0 (world ranks 0..ep-1).
  std::vector<std::vector<float>> vals(ep), avg(ep), avg_sq(ep);
  if (rank_ < ep && ep > 1) {
    std::vector<MPI_Request> req;
    std::vector<int> peers;
    const auto n = static_cast<int>(X.size());
    if (rank_ == 0) {
      for (int q = 1; q < ep; ++q) {
        vals[q].resize(X.values.size());
        avg[q].resize(X.values.size());
        avg_sq[q].resize(X.values.size());
        for (auto [buf, tag] : {std::pair{&vals[q], kTagValues}, std::pair{&avg[q], kTagExpAvg},
                                std::pair{&avg_sq[q], kTagExpAvgSq}}) {
          req.emplace_back();
          MPI_Irecv(buf->data(), n, MPI_FLOAT, q, tag, ep_comm_.get(), &req.back());
          peers.push_back(q);
        }
      }
    } else {
      for (auto [buf, tag] : {std::pair{&X.values, kTagValues}, std::pair{&X.exp_avg, kTagExpAvg},
                              std::pair{&X.exp_avg_sq, kTagExpAvgSq}}) {
        req.emplace_back();
        MPI_Isend(buf->data(), n, MPI_FLOAT, 0, tag, ep_comm_.get(), &req.back());
        peers.push_back(0);
      }
    }
    wait_all(ep_comm_, req, peers, "checkpoint: collecting the experts");
  }

  const fs::path root = config_.train.checkpoint_dir;
  const std::string name = "step-" + std::to_string(step_);
  std::string error;
  if (rank_ == 0) {
    try {
      vals[0] = X.values;
      avg[0] = X.exp_avg;
      avg_sq[0] = X.exp_avg_sq;
      model::ParamStore& D = model_->dense;
      std::vector<std::pair<std::string, Tensor>> weights, moments;
      for (const model::ParamInfo& p : D.params()) {
        weights.emplace_back(p.name, slice(D.values, p));
        moments.emplace_back(p.name + ".exp_avg", slice(D.exp_avg, p));
        moments.emplace_back(p.name + ".exp_avg_sq", slice(D.exp_avg_sq, p));
      }
      for (int l = 0; l < model_->num_moe_layers(); ++l)
        weights.emplace_back(model_->bias_name(l),
                             Tensor::wrap(model_->bias[l].data(), {config_.model.num_experts},
                                          DType::f32));
      // Each logical expert once, from its first replica in rank order.
      std::set<std::string> seen;
      for (int q = 0; q < ep; ++q) {
        const std::vector<std::string> names = model_->expert_names(slots_of(q));
        for (std::size_t i = 0; i < names.size(); ++i) {
          if (!seen.insert(names[i]).second) continue;
          const model::ParamInfo& p = X.info(static_cast<int>(i));
          weights.emplace_back(names[i], slice(vals[q], p));
          moments.emplace_back(names[i] + ".exp_avg", slice(avg[q], p));
          moments.emplace_back(names[i] + ".exp_avg_sq", slice(avg_sq[q], p));
        }
      }
      fs::create_directories(root);
      const fs::path tmp = root / (".tmp-" + name);
      fs::remove_all(tmp);
      fs::create_directories(tmp);
      const std::map<std::string, std::string> meta{{"format", "pt"}, {"epx", kFormat},
                                                    {"step", std::to_string(step_)}};
      model::save_safetensors((tmp / "model.safetensors").string(), weights, meta);
      model::save_safetensors((tmp / "optimizer.safetensors").string(), moments, meta);
      nlohmann::json state;
      state["format"] = kFormat;
      state["step"] = step_;
      state["data"] = {{"next_step", step_},
                       {"sequences_consumed", step_ * global_batch_},
                       {"global_batch", global_batch_}};
      state["grid"] = {{"dp", config_.parallel.dp}, {"ep", ep}};
      state["config"] = to_yaml(config_);
      write_file_atomic(tmp / "state.json", state.dump(2) + "\n");
      core::sync_directory(tmp.string());
      const fs::path final_dir = root / name;
      const fs::path old = root / (".old-" + name);
      if (fs::exists(final_dir)) {
        fs::remove_all(old);
        fs::rename(final_dir, old);
      }
      fs::rename(tmp, final_dir);
      core::sync_directory(root.string());
      write_file_atomic(root / "latest", name + "\n");
      fs::remove_all(old);
    } catch (const std::exception& e) {
      error = std::string("checkpoint: writing ") + (root / name).string() + ": " + e.what();
    }
  }
  agree(world_comm_, error, "epx-train: writing the checkpoint");
  return (root / name).string();
}

void Trainer::load_weights(const std::string& path, bool with_optimizer) {
  const model::SafetensorsReader w(path);
  model::ParamStore& D = model_->dense;
  model::ParamStore& X = model_->experts;
  const auto load_into = [](const model::SafetensorsReader& r, const std::string& name,
                            const model::ParamInfo& p, std::vector<float>& array) {
    const Tensor t = r.load_f32(name, p.shape);
    std::copy(t.data<float>(), t.data<float>() + p.numel, array.begin() + p.offset);
  };
  for (const model::ParamInfo& p : D.params()) load_into(w, p.name, p, D.values);
  const std::vector<std::string> names = model_->expert_names();
  for (std::size_t i = 0; i < names.size(); ++i)
    load_into(w, names[i], X.info(static_cast<int>(i)), X.values);
  for (int l = 0; l < model_->num_moe_layers(); ++l) {
    const std::string b = model_->bias_name(l);
    if (!w.contains(b) && !with_optimizer) continue;  // an outside file may lack the buffer: b = 0
    const Tensor t = w.load_f32(b, {config_.model.num_experts});
    std::copy(t.data<float>(), t.data<float>() + config_.model.num_experts, model_->bias[l].begin());
  }
  if (!with_optimizer) return;
  const model::SafetensorsReader o((fs::path(path).parent_path() / "optimizer.safetensors").string());
  for (const model::ParamInfo& p : D.params()) {
    load_into(o, p.name + ".exp_avg", p, D.exp_avg);
    load_into(o, p.name + ".exp_avg_sq", p, D.exp_avg_sq);
  }
  for (std::size_t i = 0; i < names.size(); ++i) {
    load_into(o, names[i] + ".exp_avg", X.info(static_cast<int>(i)), X.exp_avg);
    load_into(o, names[i] + ".exp_avg_sq", X.info(static_cast<int>(i)), X.exp_avg_sq);
  }
}

void Trainer::load_checkpoint(const std::string& dir) {
  const fs::path d = dir;
  std::ifstream in(d / "state.json");
  EPX_CHECK(in.good(), InvalidArgument, "resume: ", (d / "state.json").string(), " cannot be read");
  nlohmann::json state;
  try {
    state = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    EPX_THROW(InvalidArgument, "resume: ", (d / "state.json").string(), " is not valid JSON (",
              e.what(), ")");
  }
  EPX_CHECK(state.value("format", "") == kFormat, InvalidArgument, "resume: ",
            (d / "state.json").string(), " is not an epx-train checkpoint");
  load_weights((d / "model.safetensors").string(), true);
  step_ = state.at("step").get<std::int64_t>();
}

}  // namespace epx::train
